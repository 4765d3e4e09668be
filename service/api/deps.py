"""FastAPI dependencies: the context, the session factory, who the request is, and what role a route needs.

Every route under /v1 states the role it needs in one place, its decorator's `dependencies=[needs(ROLE)]` (route
dependencies run before the endpoint's own): a token below that role gets a 403 naming its role before anything
else is looked at. The endpoint then takes `Caller` (the same, cached) to scope what it reads to the token's
project: what another project holds is a 404 (`StudyInScope`, `DatasetInScope`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.guard import verified_principal
from service.context import Context
from service.core.access import Principal, Role
from service.store.db import SessionFactory
from service.store.tokens import verify_token

_bearer = HTTPBearer(auto_error=False, description="An API token from `stsweep token create`.")


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


def get_sessions(ctx: ContextDep) -> SessionFactory:
    return ctx.sessions


SessionsDep = Annotated[SessionFactory, Depends(get_sessions)]


def caller(
    request: Request, ctx: ContextDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The request's token. The request guard (service/api/guard.py) already checked it before anything else ran;
    this dependency documents the requirement in the OpenAPI and checks again when the guard is not in front."""
    verified = verified_principal(request.scope)
    if verified is not None:
        return verified
    return verify_token(ctx.sessions, credentials.credentials if credentials else None)


Caller = Annotated[Principal, Depends(caller)]


def _role_check(role: Role) -> Any:
    def check(principal: Caller) -> None:
        principal.require(role)

    check.__name__ = f"needs_{role}"
    check.required_role = role  # type: ignore[attr-defined]  # what tests/test_access.py reads
    return check


_CHECKS = {role: _role_check(role) for role in ("viewer", "member", "admin")}


def needs(role: Role) -> Any:
    """The route's role, for its decorator: `dependencies=[needs("member")]`."""
    return Depends(_CHECKS[role])


def required_role(dependencies: list[Any]) -> Role | None:
    """The role a route's `dependencies` state (None: none)."""
    roles = [getattr(d.dependency, "required_role", None) for d in dependencies]
    found = [r for r in roles if r is not None]
    return found[0] if len(found) == 1 else None


VIEWER = [needs("viewer")]
MEMBER = [needs("member")]
ADMIN = [needs("admin")]
