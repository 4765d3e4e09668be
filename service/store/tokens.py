"""API tokens: shown once at creation, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.core.errors import Unauthorized

TOKEN_PREFIX = "sts_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(factory: sessionmaker[Session], name: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(factory) as s:
        s.execute(text("INSERT INTO api_tokens (name, token_hash) VALUES (:n, :h)"),
                  {"n": name, "h": hash_token(token)})
    return token


def verify_token(factory: sessionmaker[Session], token: str | None) -> str:
    """The token's name, or Unauthorized. The hash is looked up, so no timing on the secret itself."""
    if not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with session_scope(factory) as s:
        # last_used_at is refreshed at most once a minute, so reads stay reads.
        name = s.execute(
            text("""WITH t AS (SELECT id, name, last_used_at FROM api_tokens
                               WHERE token_hash = :h AND revoked_at IS NULL),
                         touch AS (UPDATE api_tokens SET last_used_at = now() FROM t
                                   WHERE api_tokens.id = t.id
                                     AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))
                    SELECT name FROM t"""),
            {"h": hash_token(token)},
        ).scalar_one_or_none()
    if name is None:
        raise Unauthorized("invalid or revoked token")
    return name
