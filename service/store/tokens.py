"""API tokens: shown once at creation, stored only as a SHA-256 hash. A token may expire (`expires_at`) and be
revoked (`revoked_at`); either way it is refused from then on. All tokens are equal: there is no admin role."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core import numeric_limits
from service.core.errors import InvalidInput, NotFound, Unauthorized
from service.core.schemas import TokenPublic
from service.store.db import session_scope

TOKEN_PREFIX = "sts_"
_MAX_ID = 2**31 - 1  # api_tokens.id is an INTEGER


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(factory: sessionmaker[Session], name: str, expires_in_seconds: float | None = None) -> str:
    """A new token (printed once by the caller); it expires `expires_in_seconds` from now, or never (None)."""
    if expires_in_seconds is not None:
        problem = numeric_limits.limit("token.expires_in_seconds").problem(expires_in_seconds)
        if problem is not None:
            raise InvalidInput(f"{problem} seconds (a positive number, at most 100 years)",
                               field="expires_in_seconds")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(factory) as s:
        s.execute(text("INSERT INTO api_tokens (name, token_hash, expires_at) VALUES (:n, :h, "
                       "CASE WHEN CAST(:secs AS double precision) IS NULL THEN NULL "
                       "ELSE now() + make_interval(secs => CAST(:secs AS double precision)) END)"),
                  {"n": name, "h": hash_token(token), "secs": expires_in_seconds})
    return token


def list_tokens(factory: sessionmaker[Session]) -> list[TokenPublic]:
    """Every token, oldest first, revoked and expired ones included; never the secret or its hash."""
    with session_scope(factory) as s:
        rows = s.execute(text("SELECT id, name, created_at, last_used_at, expires_at, revoked_at "
                              "FROM api_tokens ORDER BY id")).all()
    return [TokenPublic(id=r.id, name=r.name, created_at=r.created_at, last_used_at=r.last_used_at,
                        expires_at=r.expires_at, revoked_at=r.revoked_at) for r in rows]


def _token_id(token_id: int | str) -> int:
    """The id as an integer, or NotFound (an id that is not one, or out of the column's range, names no token)."""
    if isinstance(token_id, int) and not isinstance(token_id, bool):
        number = token_id
    elif isinstance(token_id, str) and token_id.isascii() and token_id.isdigit() and len(token_id) <= 19:
        number = int(token_id)
    else:
        raise NotFound(f"token {token_id} not found", field="token_id")
    if not 1 <= number <= _MAX_ID:
        raise NotFound(f"token {token_id} not found", field="token_id")
    return number


def revoke_token(factory: sessionmaker[Session], token_id: int | str) -> None:
    """Revoke the token: refused from its next request on. Revoking it again is a no-op (the first time stays)."""
    number = _token_id(token_id)
    with session_scope(factory) as s:
        found = s.execute(text("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = :id "
                               "RETURNING id"), {"id": number}).scalar_one_or_none()
    if found is None:
        raise NotFound(f"token {token_id} not found", field="token_id")


def verify_token(factory: sessionmaker[Session], token: str | None) -> str:
    """The token's name, or Unauthorized. The hash is looked up, so no timing on the secret itself."""
    if not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with session_scope(factory) as s:
        # last_used_at is refreshed at most once a minute (and only for a token that is accepted), so reads
        # stay reads.
        row = s.execute(
            text("""WITH t AS (SELECT id, name, last_used_at, revoked_at IS NOT NULL AS revoked,
                                      (expires_at IS NOT NULL AND expires_at <= now()) AS expired
                               FROM api_tokens WHERE token_hash = :h),
                         touch AS (UPDATE api_tokens SET last_used_at = now() FROM t
                                   WHERE api_tokens.id = t.id AND NOT t.revoked AND NOT t.expired
                                     AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))
                    SELECT name, revoked, expired FROM t"""),
            {"h": hash_token(token)},
        ).first()
    if row is None or row.revoked:
        raise Unauthorized("invalid or revoked token")
    if row.expired:
        raise Unauthorized("token expired")
    return str(row.name)
