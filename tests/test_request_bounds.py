"""Issue 18, item 4: every path parameter, query parameter and header a route reads is bounded before it is
parsed (service/api/request_bounds.py, run by the request guard), and a value that does not parse is a 4xx
naming it, never a 500. The walk covers every operation of the app's own OpenAPI document, so a route added
later is walked too; the headers the routes read without declaring them (Authorization, Content-Type, ...) are
sent to every operation. In-process (TestClient, real PostgreSQL), then a few over a real socket (uvicorn)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from service.api.request_bounds import MAX_HEADER_BYTES, MAX_SEGMENT_BYTES
from tests.studyspecs import contract_study

DIGITS = "9" * 5000  # past Python's 4,300-digit int() limit
HOSTILE_PATH = [DIGITS, "x" * 5000, "-1", quote("é☃"), "%00", "%ff%fe%", "1e400", "..%2F..%2Fetc", "-0"]
HOSTILE_QUERY = [DIGITS, "x" * 9000, "-1", "é☃", "\x00", "%ff%fe%", "1e400", "-0", "1e-400", "[" * 500]
HOSTILE_HEADER = [DIGITS, "x" * 9000, "-1", "\xe9\xff", "%ff%fe%", "1e400", "bytes=" + DIGITS + "-",
                  "bytes=-" + DIGITS, "bytes=0-" + DIGITS, "Bearer " + DIGITS]
# Read by routes (or the guard) without being declared as parameters.
UNDECLARED_HEADERS = ["Authorization", "Content-Type", "Content-Encoding", "Accept-Encoding", "Range", "If-Range",
                      "Idempotency-Key"]
GOOD_PATH = {"study_id": "st_0123456789abcdef", "number": "0", "dataset_id": "ds_" + "0" * 16,
             "token_id": "999999", "name": "default"}
OVERSIZED = (DIGITS, "x" * 5000, "x" * 9000, "bytes=" + DIGITS + "-", "bytes=-" + DIGITS, "bytes=0-" + DIGITS,
             "Bearer " + DIGITS)


def operations(client: TestClient) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    for path, ops in client.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op.get("parameters", [])


def _body(method: str, path: str) -> dict[str, Any]:
    if method == "PATCH":  # /v1/projects/{name}: every field optional
        return {"json": {}}
    if method != "POST":
        return {}
    if path == "/v1/studies":
        return {"json": contract_study()}
    if path.endswith("/extend"):
        return {"json": {"n_trials": 1}}
    if path == "/v1/tokens":
        return {"json": {"name": "bounds", "role": "viewer"}}
    if path == "/v1/projects":
        return {"json": {"name": "bounds"}}
    return {}


def _named(response: Any, name: str) -> bool:
    if response.request.method == "HEAD":  # no body to name anything in: the status says enough
        return True
    error = response.json().get("error", {})
    return str(error.get("field", "")).lower() == name.lower()


def _send(client: TestClient, method: str, path: str, params: list[dict[str, Any]], target: dict[str, Any] | None,
          value: str, header: str | None = None) -> Any:
    url = path
    for p in params:
        if p["in"] == "path":
            filled = value if target is p else GOOD_PATH[p["name"]]
            url = url.replace("{" + p["name"] + "}", filled)
    query = {"task": "scored_pairs"} if path == "/v1/datasets" and method == "POST" else {}
    if target is not None and target["in"] == "query":
        query[target["name"]] = value
    headers: dict[str, bytes] = {}  # bytes: sent as is (latin-1), as a raw client would
    if target is not None and target["in"] == "header":
        headers[target["name"]] = value.encode("latin-1")
    if header is not None:
        headers[header] = value.encode("latin-1")
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return client.request(method, url + ("?" + encoded if encoded else ""), headers=headers,
                          **_body(method, path))


def test_every_declared_parameter_is_bounded_and_a_bad_value_is_a_4xx_naming_it(client: TestClient,
                                                                               data_root: Path) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    # A study that exists: a study id the token cannot see is a 404 before any other parameter is looked at.
    created = client.post("/v1/studies", json=contract_study())
    assert created.status_code == 201, created.text
    GOOD_PATH["study_id"] = created.json()["id"]
    seen = 0
    for method, path, params in operations(client):
        for target in params:
            values = {"path": HOSTILE_PATH, "query": HOSTILE_QUERY, "header": HOSTILE_HEADER}[target["in"]]
            for value in values:
                r = _send(client, method, path, params, target, value)
                seen += 1
                where = (method, path, target["name"], value[:20], r.status_code, r.text[:300])
                assert r.status_code < 500, where
                if value in OVERSIZED:  # past every bound or parse: refused, by name
                    assert 400 <= r.status_code < 500 and r.status_code != 401, where
                    assert r.status_code == 404 or _named(r, target["name"]), where
                    if r.status_code == 404:  # an id that cannot be one is simply not found: named too
                        assert _named(r, target["name"]) or target["in"] == "header", where
                elif r.status_code in (400, 414, 422, 431):
                    assert _named(r, target["name"]) or not _named(r, "body"), where
    assert seen > 300


def test_every_header_the_routes_read_is_bounded_on_every_operation(client: TestClient) -> None:
    for method, path, params in operations(client):
        for header in UNDECLARED_HEADERS:
            r = _send(client, method, path, params, None, DIGITS, header=header)
            assert r.status_code == 431 and _named(r, header), (method, path, header, r.status_code, r.text[:200])
            for value in ("\xe9\xff", "1e400", "bytes=0-1,2-3"):
                r = _send(client, method, path, params, None, value, header=header)
                assert r.status_code < 500, (method, path, header, value, r.status_code, r.text[:200])


def test_path_segments_query_and_header_counts_are_bounded(client: TestClient) -> None:
    r = client.delete("/v1/tokens/" + DIGITS)
    assert r.status_code == 414 and _named(r, "token_id"), r.text
    r = client.get("/v1/studies/st_0123456789abcdef/trials/" + "1" * (MAX_SEGMENT_BYTES + 1))
    assert r.status_code == 414 and _named(r, "number"), r.text
    r = client.delete("/v1/tokens/" + "9" * 400)  # within the bound, past any id: not found, by name
    assert r.status_code == 404 and _named(r, "token_id"), r.text
    r = client.get("/v1/nowhere/" + "x" * 5000)
    assert r.status_code == 414 and _named(r, "path")
    r = client.get("/v1/studies?" + "&".join(f"p{i}=1" for i in range(100)))
    assert r.status_code == 414 and _named(r, "query")
    r = client.get("/v1/studies", headers={"X-Anything": "x" * (MAX_HEADER_BYTES + 1)})
    assert r.status_code == 431 and _named(r, "X-Anything")
    r = client.get("/v1/studies", headers={f"X-Extra-{i}": "1" for i in range(100)})
    assert r.status_code == 431 and _named(r, "headers")
    r = client.get("/v1/studies", params={"limit": DIGITS})
    assert r.status_code == 422 and _named(r, "limit"), r.text
    assert client.get("/v1/studies").status_code == 200  # and the server goes on


def _raw(base: str, request: bytes) -> bytes:
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        return answer


@pytest.mark.parametrize("head", [
    b"DELETE /v1/tokens/" + DIGITS.encode() + b" HTTP/1.1\r\nHost: x\r\n",
    b"GET /v1/studies/st_0123456789abcdef/best-checkpoint HTTP/1.1\r\nHost: x\r\nRange: bytes=" + DIGITS.encode()
    + b"-\r\n",
    b"POST /v1/studies HTTP/1.1\r\nHost: x\r\nContent-Length: " + DIGITS.encode() + b"\r\n",
    b"GET /v1/studies HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n",
    b"GET /v1/studies?limit=" + DIGITS.encode() + b" HTTP/1.1\r\nHost: x\r\n",
    b"GET /v1/studies/%ff%fe%00 HTTP/1.1\r\nHost: x\r\n",
])
def test_over_a_real_socket_a_hostile_request_line_or_header_is_a_4xx(live_server: str, token: str,
                                                                       head: bytes) -> None:
    answer = _raw(live_server, head + b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500 and status != 401, answer[:300]
    assert int(_raw(live_server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").split(b" ", 2)[1]) == 200
