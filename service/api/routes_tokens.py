"""/v1/tokens: who a token is, and (admin) creating, listing and revoking tokens. Any token may read and revoke
itself; the last live admin token cannot be revoked (409)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from service.api.deps import ADMIN, VIEWER, Caller, SessionsDep
from service.core.durations import parse_duration
from service.core.errors import InvalidInput, NotFound
from service.core.schemas import TokenCreate, TokenCreated, TokenPublic
from service.store import tokens

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


class TokenList(BaseModel):
    items: list[TokenPublic]
    total: int


def _seconds(expires_in: int | str | None) -> float | None:
    if expires_in is None or isinstance(expires_in, int):
        return expires_in
    try:
        return parse_duration(expires_in)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="expires_in") from exc


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TokenCreated, dependencies=ADMIN)
def create_token(body: TokenCreate, sessions: SessionsDep) -> TokenCreated:
    """A new token of `project` with `role`. Its secret (`token`) is in this answer only; only its hash is kept."""
    try:
        secret = tokens.create_token(sessions, body.name, _seconds(body.expires_in), project=body.project,
                                     role=body.role)
    except InvalidInput as exc:
        if exc.field == "expires_in_seconds":
            raise InvalidInput(exc.message, field="expires_in") from exc
        raise
    made = tokens.verify_token(sessions, secret)
    return TokenCreated(token=secret, **tokens.get_token(sessions, made.token_id).model_dump())


@router.get("", response_model=TokenList, dependencies=ADMIN)
def list_tokens(sessions: SessionsDep) -> TokenList:
    """Every token of every project, oldest first, revoked and expired ones included. Never a secret or hash."""
    items = tokens.list_tokens(sessions)
    return TokenList(items=items, total=len(items))


@router.get("/me", response_model=TokenPublic, dependencies=VIEWER)
def read_own_token(principal: Caller, sessions: SessionsDep) -> TokenPublic:
    """The token this request uses: its name, project and role."""
    return tokens.get_token(sessions, principal.token_id)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, dependencies=VIEWER)
def revoke_token(token_id: str, principal: Caller, sessions: SessionsDep) -> Response:
    """Revoke a token (204; again is fine): an admin any token, anyone else only the one it uses (another token
    is a 404 for it). 409 for the last live admin token."""
    number = tokens.token_id(token_id)
    if not principal.is_admin and number != principal.token_id:
        raise NotFound(f"token {token_id} not found", field="token_id")
    tokens.revoke_token(sessions, number)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
