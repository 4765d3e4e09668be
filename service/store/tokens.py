"""API tokens: shown once at creation, stored only as a SHA-256 hash. A token belongs to one project with one
role (service/core/access.py); it may expire (`expires_at`) and be revoked (`revoked_at`); either way it is refused
from then on. The last unrevoked, unexpired admin token cannot be revoked: someone must be able to manage."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core import numeric_limits
from service.core.access import DEFAULT_PROJECT, Principal, Role, check_project_name, check_role
from service.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from service.core.schemas import TokenPublic
from service.store.db import session_scope

TOKEN_PREFIX = "sts_"
_MAX_ID = 2**31 - 1  # api_tokens.id is an INTEGER
_LIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(factory: sessionmaker[Session], name: str, expires_in_seconds: float | None = None, *,
                 project: str = DEFAULT_PROJECT, role: Role = "admin") -> str:
    """A new token (printed once by the caller) of `project` with `role`; it expires `expires_in_seconds` from
    now, or never (None). NotFound (field `project`) when there is no such project."""
    if expires_in_seconds is not None:
        problem = numeric_limits.limit("token.expires_in_seconds").problem(expires_in_seconds)
        if problem is not None:
            raise InvalidInput(f"{problem} seconds (a positive number, at most 100 years)",
                               field="expires_in_seconds")
    check_project_name(project)
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(factory) as s:
        made = s.execute(
            text("INSERT INTO api_tokens (name, token_hash, expires_at, project, role) "
                 "SELECT :n, :h, CASE WHEN CAST(:secs AS double precision) IS NULL THEN NULL "
                 "ELSE now() + make_interval(secs => CAST(:secs AS double precision)) END, name, :role "
                 "FROM projects WHERE name = :project RETURNING id"),
            {"n": name, "h": hash_token(token), "secs": expires_in_seconds, "project": project, "role": role},
        ).scalar_one_or_none()
    if made is None:
        raise NotFound(f"project {project!r} not found", field="project")
    return token


def first_token_role(factory: sessionmaker[Session]) -> Role:
    """The role `stsweep token create` gives when none is asked for: admin for the deployment's first token
    (someone must manage it), member for every later one."""
    with session_scope(factory) as s:
        any_token = s.execute(text("SELECT EXISTS (SELECT 1 FROM api_tokens)")).scalar_one()
    return "member" if any_token else "admin"


_PUBLIC = "id, name, project, role, created_at, last_used_at, expires_at, revoked_at"


def _public(r: Any) -> TokenPublic:
    return TokenPublic(id=r.id, name=r.name, project=r.project, role=r.role, created_at=r.created_at,
                       last_used_at=r.last_used_at, expires_at=r.expires_at, revoked_at=r.revoked_at)


def list_tokens(factory: sessionmaker[Session], project: str | None = None) -> list[TokenPublic]:
    """Every token (of `project`, or of every project), oldest first, revoked and expired ones included; never
    the secret or its hash."""
    with session_scope(factory) as s:
        rows = s.execute(text(f"SELECT {_PUBLIC} FROM api_tokens "
                              "WHERE CAST(:p AS text) IS NULL OR project = :p ORDER BY id"), {"p": project}).all()
    return [_public(r) for r in rows]


def get_token(factory: sessionmaker[Session], token_id: int) -> TokenPublic:
    with session_scope(factory) as s:
        row = s.execute(text(f"SELECT {_PUBLIC} FROM api_tokens WHERE id = :id"), {"id": token_id}).first()
    if row is None:
        raise NotFound(f"token {token_id} not found", field="token_id")
    return _public(row)


def token_id(token_id: int | str) -> int:
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


def revoke_token(factory: sessionmaker[Session], token_id_: int | str) -> None:
    """Revoke the token: refused from its next request on. Revoking it again is a no-op (the first time stays).
    Conflict when it is the last live admin token (revoking it would leave nobody to manage the deployment);
    admins are counted under a lock, so two admins revoking each other at once cannot both succeed."""
    number = token_id(token_id_)
    with session_scope(factory) as s:
        row = s.execute(text(f"SELECT role, {_LIVE} AS live FROM api_tokens WHERE id = :id FOR UPDATE"),
                        {"id": number}).first()
        if row is None:
            raise NotFound(f"token {token_id_} not found", field="token_id")
        if row.role == "admin" and row.live:
            s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('stsweep-admin-tokens', 0))"))
            others = s.execute(text(f"SELECT count(*) FROM api_tokens WHERE role = 'admin' AND {_LIVE} "
                                    "AND id <> :id"), {"id": number}).scalar_one()
            if others == 0:
                raise Conflict("this is the last admin token: create another admin token before revoking it",
                               field="token_id")
        s.execute(text("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = :id"),
                  {"id": number})


def verify_token(factory: sessionmaker[Session], token: str | None) -> Principal:
    """Who the token is, or Unauthorized. The hash is looked up, so no timing on the secret itself."""
    if not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with session_scope(factory) as s:
        # last_used_at is refreshed at most once a minute (and only for a token that is accepted), so reads
        # stay reads.
        row = s.execute(
            text("""WITH t AS (SELECT id, name, project, role, last_used_at, revoked_at IS NOT NULL AS revoked,
                                      (expires_at IS NOT NULL AND expires_at <= now()) AS expired
                               FROM api_tokens WHERE token_hash = :h),
                         touch AS (UPDATE api_tokens SET last_used_at = now() FROM t
                                   WHERE api_tokens.id = t.id AND NOT t.revoked AND NOT t.expired
                                     AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'))
                    SELECT id, name, project, role, revoked, expired FROM t"""),
            {"h": hash_token(token)},
        ).first()
    if row is None or row.revoked:
        raise Unauthorized("invalid or revoked token")
    if row.expired:
        raise Unauthorized("token expired")
    return Principal(token_id=row.id, name=str(row.name), project=str(row.project), role=row.role)
