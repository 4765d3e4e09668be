"""Issue 18, item 8: request heads and bodies must arrive within STSWEEP_HEADER_TIMEOUT_SECONDS (uvicorn's h11
protocol with a head timer, service/api/http_server.py) and STSWEEP_BODY_TIMEOUT_SECONDS between two body parts
(the request guard, api/body_meter.py). Raw sockets against one real uvicorn server with short timeouts: a
slow-loris head and a silent connection are closed, a stalled body is answered 408 and closed, and an honest slow
client within the limits (whose whole request takes longer than either timeout) succeeds."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.rawhttp import Served, read_answer, served, status_of

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
ROWS = b"".join(json.dumps({"sentence1": f"a {i}", "sentence2": f"b {i}", "score": 0.5}).encode() + b"\n"
                for i in range(30))


@pytest.fixture(scope="module")
def server(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(template_db, tmp_path_factory.mktemp("timeouts"), header_timeout_seconds=HEADER_TIMEOUT,
                body_timeout_seconds=BODY_TIMEOUT) as s:
        yield s


def _closed_while_dripping(sock: socket.socket, drip: bytes, every: float, limit: float) -> tuple[float, bytes]:
    """Send `drip` one byte every `every` seconds until the server closes; (seconds it took, what it said)."""
    started = time.monotonic()
    said = b""
    sock.settimeout(every)
    for byte in drip:
        if time.monotonic() - started > limit:
            break
        try:
            sock.sendall(bytes([byte]))
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started, said
        if not chunk:
            return time.monotonic() - started, said
        said += chunk
    return time.monotonic() - started, said


def test_a_slow_loris_head_is_closed_after_the_header_timeout(server: Served) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    with server.connect() as sock:
        took, said = _closed_while_dripping(sock, head, every=0.3, limit=HEADER_TIMEOUT * 4)
    assert HEADER_TIMEOUT * 0.8 <= took <= HEADER_TIMEOUT + 1.5, took
    assert said == b"" or status_of(said) == 408, said


def test_a_connection_that_sends_nothing_is_closed(server: Served) -> None:
    with server.connect(timeout=HEADER_TIMEOUT * 4) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""
    assert time.monotonic() - started <= HEADER_TIMEOUT + 1.5


@pytest.mark.parametrize("path,content_type", [("/v1/studies", b"application/json"),
                                               ("/v1/datasets?task=scored_pairs&filename=a.jsonl",
                                                b"application/octet-stream")])
def test_a_stalled_body_is_answered_408_and_closed(server: Served, path: str, content_type: bytes) -> None:
    with server.connect(timeout=BODY_TIMEOUT * 4) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + server.auth() + b"Content-Type: "
                     + content_type + b"\r\nContent-Length: 1000\r\n\r\n" + ROWS[:100])
        started = time.monotonic()
        answer = read_answer(sock, deadline=BODY_TIMEOUT * 4)
        took = time.monotonic() - started
        rest = sock.recv(4096)
    assert status_of(answer) == 408 and b"connection: close" in answer.lower(), answer[:300]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["field"] == "body" and "STSWEEP_BODY_TIMEOUT_SECONDS" in error["message"]
    assert BODY_TIMEOUT * 0.8 <= took <= BODY_TIMEOUT + 1.5 and rest == b""


def test_an_honest_slow_client_within_the_limits_succeeds(server: Served) -> None:
    """Its head takes most of the header timeout and its body comes in parts each within the body timeout,
    the whole request taking longer than both."""
    head = (b"POST /v1/datasets?task=scored_pairs&filename=slow.jsonl HTTP/1.1\r\nHost: x\r\n" + server.auth()
            + b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(ROWS))
    pause = HEADER_TIMEOUT / 3
    started = time.monotonic()
    with server.connect() as sock:
        for i in range(0, len(head), len(head) // 2 + 1):
            sock.sendall(head[i:i + len(head) // 2 + 1])
            time.sleep(pause)
        part = len(ROWS) // 4 + 1
        for i in range(0, len(ROWS), part):
            sock.sendall(ROWS[i:i + part])
            time.sleep(BODY_TIMEOUT * 0.6)
        answer = read_answer(sock)
    assert time.monotonic() - started > max(HEADER_TIMEOUT, BODY_TIMEOUT) + 1
    assert status_of(answer) == 201, answer[:500]


def test_keep_alive_requests_each_get_their_own_header_timer(server: Served) -> None:
    """A connection that served a request and sends the next one in time is served again (the timer restarts
    per request, it does not run from the connection's start)."""
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(read_answer(sock)) == 200
            time.sleep(HEADER_TIMEOUT * 0.6)
