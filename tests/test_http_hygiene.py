"""Auth first, bounded bodies and HTTP hygiene (service/api/guard.py, service/api/errors.py), against the real app
over real PostgreSQL, in-process and over a real socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.context import Context
from service.settings import Settings
from tests.studyspecs import contract_study

GUARDED = [
    ("GET", "/v1/studies"), ("POST", "/v1/studies"), ("GET", "/v1/studies/st_0123456789abcdef"),
    ("GET", "/v1/studies/..%2F..%2Fetc"), ("GET", "/v1/studies/not-an-id/trials"),
    ("DELETE", "/v1/studies/st_0123456789abcdef"), ("POST", "/v1/studies/bad/pause"),
    ("GET", "/v1/datasets"), ("POST", "/v1/datasets"), ("GET", "/v1/datasets/../../x"),
    ("GET", "/v1/studies/st_0123456789abcdef/best-checkpoint"), ("GET", "/v1/workers"),
    ("GET", "/v1/nonexistent"), ("PUT", "/v1/studies"),
]


@pytest.fixture
def anon(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx, run_reaper=False), raise_server_exceptions=False) as c:
        yield c


def test_without_a_token_every_route_but_health_is_401(anon: TestClient) -> None:
    """Whatever the method, the path (badly shaped ids too) and the body (malformed JSON too)."""
    for method, path in GUARDED:
        for body in (None, b"{not json", b'{"name": "x"}', b"x" * 5_000_000):
            r = anon.request(method, path, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
            bad = anon.request(method, path, content=body, headers={"Authorization": "Bearer sts_not-a-token"})
            assert bad.status_code == 401, (method, path, bad.status_code)


def test_health_and_the_dashboard_page_need_no_token(anon: TestClient) -> None:
    assert anon.get("/healthz").status_code == 200
    assert anon.get("/readyz").status_code == 200
    assert anon.get("/").status_code == 200
    assert anon.get("/static/app.js").status_code == 200


def test_docs_are_public_unless_the_setting_says_otherwise(anon: TestClient, settings: Settings) -> None:
    assert anon.get("/openapi.json").status_code == 200 and anon.get("/docs").status_code == 200
    locked = Context(settings.model_copy(update={"docs_need_token": True}), settings.database_url or "")
    try:
        with TestClient(create_app(locked, run_reaper=False)) as c:
            assert c.get("/openapi.json").status_code == 401 and c.get("/docs").status_code == 401
    finally:
        locked.close()


def test_security_headers_on_pages_and_api(client: TestClient) -> None:
    for path in ("/", "/v1/studies", "/healthz", "/static/app.js"):
        h = client.get(path).headers
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in csp
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"


def test_405_says_what_is_allowed(client: TestClient) -> None:
    r = client.put("/v1/studies")
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_an_empty_idempotency_key_is_422(client: TestClient) -> None:
    r = client.post("/v1/studies", json=contract_study(), headers={"Idempotency-Key": ""})
    assert r.status_code == 422 and r.json()["error"]["field"] == "Idempotency-Key"
    assert client.get("/v1/studies").json()["total"] == 0


def test_a_json_body_over_the_limit_is_413_naming_the_limit(client: TestClient, ctx: Context) -> None:
    limit = ctx.settings.max_json_body_bytes
    body = contract_study(description="x" * (limit + 10))
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 413 and str(limit) in r.json()["error"]["message"]
    assert r.headers["connection"] == "close"
    assert client.get("/v1/studies").json()["total"] == 0


def test_an_oversized_body_is_refused_before_it_is_read_and_the_connection_closes(live_server: str,
                                                                                  token: str) -> None:
    host, port = urlsplit(live_server).hostname, urlsplit(live_server).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 1000000000\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes without waiting for the gigabyte
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 413") and b"connection: close" in head


def test_a_500_closes_the_connection(ctx: Context, token: str) -> None:
    app = create_app(ctx, run_reaper=False)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/boom", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 500 and r.headers["connection"] == "close"
    assert "a bug" not in r.text
