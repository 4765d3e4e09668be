"""API tokens on real PostgreSQL: expiry, listing (never the secret or its hash), revocation over HTTP and in the
store, and the `stsweep token create / ls / revoke` commands run as the installed console script."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.core.errors import InvalidInput, NotFound, Unauthorized
from service.store.db import session_scope
from service.store.tokens import create_token, hash_token, list_tokens, revoke_token, verify_token
from tests.test_cli import ok, one_line_error, stsweep

FIELDS = {"id", "name", "project", "role", "created_at", "last_used_at", "expires_at", "revoked_at"}


def _id(ctx: Context, name: str) -> int:
    return next(t.id for t in list_tokens(ctx.sessions) if t.name == name)


def _as(client: TestClient, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _backdate(ctx: Context, token_id: int) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = :id"),
                  {"id": token_id})


# ---------------------------------------------------------------- HTTP


def test_list_shows_every_token_without_its_secret_or_hash(client: TestClient, ctx: Context, token: str) -> None:
    other = create_token(ctx.sessions, "ci", expires_in_seconds=3600)
    r = client.get("/v1/tokens")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "total"} and body["total"] == 2
    assert [t["name"] for t in body["items"]] == ["tests", "ci"]
    for item in body["items"]:
        assert set(item) == FIELDS, item
    for secret in (token, other):
        assert secret not in r.text and hash_token(secret) not in r.text
    tests, ci = body["items"]
    assert tests["expires_at"] is None and tests["revoked_at"] is None
    assert tests["last_used_at"] is not None  # this very request used it
    expires = datetime.fromisoformat(ci["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=1)


def test_tokens_endpoints_need_a_token(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    for method, path in [("get", "/v1/tokens"), ("delete", "/v1/tokens/1")]:
        r = getattr(anonymous, method)(path)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized"


def test_a_revoked_token_gets_401_and_another_still_works(client: TestClient, ctx: Context) -> None:
    other = create_token(ctx.sessions, "other")
    assert client.get("/v1/studies", headers=_as(client, other)).status_code == 200
    other_id = _id(ctx, "other")

    r = client.delete(f"/v1/tokens/{other_id}")
    assert r.status_code == 204 and r.content == b""
    refused = client.get("/v1/studies", headers=_as(client, other))
    assert refused.status_code == 401
    assert refused.json()["error"] == {"code": "unauthorized", "message": "invalid or revoked token"}
    assert client.get("/v1/studies").status_code == 200  # the fixture's token is untouched

    first = next(t for t in client.get("/v1/tokens").json()["items"] if t["id"] == other_id)["revoked_at"]
    assert first is not None
    assert client.delete(f"/v1/tokens/{other_id}").status_code == 204  # twice is fine; the time stays
    assert next(t for t in client.get("/v1/tokens").json()["items"] if t["id"] == other_id)["revoked_at"] == first


def test_revoking_the_token_in_use_works_and_the_next_request_is_401(client: TestClient, ctx: Context) -> None:
    mine = _id(ctx, "tests")
    r = client.delete(f"/v1/tokens/{mine}")
    assert r.status_code == 409 and "last admin token" in r.json()["error"]["message"], r.text  # nobody left
    create_token(ctx.sessions, "second-admin")
    assert client.delete(f"/v1/tokens/{mine}").status_code == 204
    assert client.get("/v1/tokens").status_code == 401


def test_an_expired_token_gets_401(client: TestClient, ctx: Context) -> None:
    expiring = create_token(ctx.sessions, "expiring", expires_in_seconds=3600)
    assert client.get("/v1/studies", headers=_as(client, expiring)).status_code == 200
    _backdate(ctx, _id(ctx, "expiring"))
    r = client.get("/v1/studies", headers=_as(client, expiring))
    assert r.status_code == 401
    assert r.json()["error"] == {"code": "unauthorized", "message": "token expired"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/studies").status_code == 200


@pytest.mark.parametrize("bad_id", ["999999", "0", "abc", "99999999999", "-1"])
def test_deleting_an_unknown_token_is_404(client: TestClient, bad_id: str) -> None:
    r = client.delete(f"/v1/tokens/{bad_id}")
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "not_found" and bad_id in error["message"]
    assert client.get("/v1/tokens").json()["total"] == 1  # nothing was revoked


# ---------------------------------------------------------------- the store


def test_store_create_verify_revoke(ctx: Context) -> None:
    plain = create_token(ctx.sessions, "plain")  # the old signature still works
    assert verify_token(ctx.sessions, plain).name == "plain"
    with pytest.raises(InvalidInput):
        create_token(ctx.sessions, "bad", expires_in_seconds=0)
    with pytest.raises(InvalidInput):
        create_token(ctx.sessions, "bad", expires_in_seconds=float("inf"))
    with pytest.raises(NotFound):
        revoke_token(ctx.sessions, 424242)
    expired = create_token(ctx.sessions, "expired", expires_in_seconds=60)
    _backdate(ctx, _id(ctx, "expired"))
    with pytest.raises(Unauthorized, match="token expired"):
        verify_token(ctx.sessions, expired)
    revoke_token(ctx.sessions, _id(ctx, "expired"))  # revoked wins over expired in the message
    with pytest.raises(Unauthorized, match="invalid or revoked token"):
        verify_token(ctx.sessions, expired)
    with pytest.raises(Unauthorized, match="invalid or revoked token"):
        verify_token(ctx.sessions, "sts_not-a-real-token")
    listed = {t.name: t for t in list_tokens(ctx.sessions)}
    assert listed["plain"].last_used_at is not None and listed["expired"].last_used_at is None
    assert set(listed) == {"plain", "expired"}


# ---------------------------------------------------------------- the CLI, as the installed console script


@pytest.fixture
def db_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "userhome"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(HOME=str(home), COLUMNS="200", NO_COLOR="1", TERM="dumb", STSWEEP_DATABASE_URL=database_url,
               STSWEEP_HOME=str(tmp_path / "stsweep-home"))
    return env


def test_cli_token_create_ls_revoke(db_env: dict[str, str], ctx: Context, tmp_path: Path) -> None:
    secret = ok(stsweep("token", "create", "--name", "ci-bot", "--expires-in", "30d", env=db_env, cwd=tmp_path))
    secret = secret.strip()
    assert secret.startswith("sts_") and verify_token(ctx.sessions, secret).name == "ci-bot"
    created = next(t for t in list_tokens(ctx.sessions) if t.name == "ci-bot")
    assert created.expires_at is not None
    assert timedelta(days=30) - timedelta(minutes=5) < created.expires_at - datetime.now(timezone.utc) \
        <= timedelta(days=30)
    ok(stsweep("token", "create", "--name", "forever", "--role", "admin", env=db_env, cwd=tmp_path))

    listing = ok(stsweep("token", "ls", env=db_env, cwd=tmp_path))
    header = listing.splitlines()[0]
    for column in ("id", "name", "project", "role", "created", "last used", "expires", "revoked"):
        assert column in header, header
    assert secret not in listing and hash_token(secret) not in listing
    row = next(line.split() for line in listing.splitlines() if "ci-bot" in line)
    expires_day = created.expires_at.astimezone().strftime("%Y-%m-%d")
    assert row[0] == str(created.id) and expires_day in row and row[-1] == "-"  # not revoked
    assert row[1:4] == ["ci-bot", "default", "admin"]  # the deployment's first token
    forever = next(line.split() for line in listing.splitlines() if "forever" in line)
    assert forever[-2:] == ["-", "-"]  # never expires, not revoked

    assert ok(stsweep("token", "revoke", str(created.id), env=db_env, cwd=tmp_path)).strip() == \
        f"token {created.id}: revoked"
    with pytest.raises(Unauthorized):
        verify_token(ctx.sessions, secret)
    ok(stsweep("token", "revoke", str(created.id), env=db_env, cwd=tmp_path))  # twice is fine
    listing = ok(stsweep("token", "ls", env=db_env, cwd=tmp_path))
    row = next(line.split() for line in listing.splitlines() if "ci-bot" in line)
    assert row[-1] != "-"  # the revocation time

    one_line_error(stsweep("token", "revoke", "424242", env=db_env, cwd=tmp_path), 1, "424242", "not found")


def test_cli_token_create_with_a_project_and_a_role(db_env: dict[str, str], ctx: Context, tmp_path: Path) -> None:
    first = ok(stsweep("token", "create", "--name", "first", "--project", "default", env=db_env, cwd=tmp_path))
    assert verify_token(ctx.sessions, first.strip()).role == "admin"  # the first token: an admin
    later = ok(stsweep("token", "create", "-n", "later", env=db_env, cwd=tmp_path)).strip()
    assert verify_token(ctx.sessions, later).role == "member"  # then member unless asked
    one_line_error(stsweep("token", "create", "-n", "x", "--project", "nlp", env=db_env, cwd=tmp_path), 1,
                   "project 'nlp' not found")
    from service.core.schemas import ProjectCreate
    from service.store.projects import create_project

    create_project(ctx.sessions, ProjectCreate(name="nlp"))
    r = stsweep("token", "create", "-n", "reader", "-p", "nlp", "--role", "viewer", env=db_env, cwd=tmp_path)
    reader = verify_token(ctx.sessions, ok(r).strip())
    assert (reader.project, reader.role) == ("nlp", "viewer")
    assert "viewer of project nlp" in r.stderr
    listing = ok(stsweep("token", "ls", "--project", "nlp", env=db_env, cwd=tmp_path))
    rows = [line.split()[1:4] for line in listing.splitlines()[2:] if line.strip()]
    assert rows == [["reader", "nlp", "viewer"]], listing
    one_line_error(stsweep("token", "create", "-n", "x", "--role", "owner", env=db_env, cwd=tmp_path), 2,
                   "--role", "viewer, member, admin")
    one_line_error(stsweep("token", "create", "-n", "x", "--project", "Not/A/Name", env=db_env, cwd=tmp_path), 2,
                   "--project")
    assert {t.name for t in list_tokens(ctx.sessions)} == {"first", "later", "reader"}


@pytest.mark.parametrize("bad", ["soon", "30", "0d", "-5m", "1.5h", "12w"])
def test_cli_token_create_with_a_bad_duration_exits_2(db_env: dict[str, str], ctx: Context, tmp_path: Path,
                                                      bad: str) -> None:
    r = stsweep("token", "create", "--name", "x", "--expires-in", bad, env=db_env, cwd=tmp_path)
    one_line_error(r, 2, "--expires-in", bad)
    assert list_tokens(ctx.sessions) == []
