"""FastAPI dependencies: the context, the session factory, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.store.tokens import verify_token
from service.api.guard import token_name
from service.context import Context
from service.store.db import SessionFactory

_bearer = HTTPBearer(auto_error=False, description="An API token from `stsweep token create`.")


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]


def get_sessions(ctx: ContextDep) -> SessionFactory:
    return ctx.sessions


SessionsDep = Annotated[SessionFactory, Depends(get_sessions)]


def require_token(
    request: Request, ctx: ContextDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The token's name. The request guard (service/api/guard.py) already checked it before anything else ran;
    this dependency documents the requirement in the OpenAPI and checks again when the guard is not in front."""
    verified = token_name(request.scope)
    if verified is not None:
        return verified
    return verify_token(ctx.sessions, credentials.credentials if credentials else None)


TokenDep = Annotated[str, Depends(require_token)]
