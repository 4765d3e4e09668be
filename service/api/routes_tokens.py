"""/v1/tokens: list the API tokens and revoke one. Any valid token may do both (tokens are all equal, there is
no admin role); revoking the token a request uses works, and that token's next request gets a 401."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from service.api.deps import SessionsDep, TokenDep
from service.core.schemas import TokenPublic
from service.store import tokens

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


class TokenList(BaseModel):
    items: list[TokenPublic]
    total: int


@router.get("", response_model=TokenList)
def list_tokens(sessions: SessionsDep, _token: TokenDep) -> TokenList:
    """Every token, oldest first, revoked and expired ones included. Never the secret or its hash."""
    items = tokens.list_tokens(sessions)
    return TokenList(items=items, total=len(items))


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def revoke_token(token_id: str, sessions: SessionsDep, _token: TokenDep) -> Response:
    """Revoke a token (204; again is fine). 404 if there is no such token."""
    tokens.revoke_token(sessions, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
