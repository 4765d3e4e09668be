"""Raw-socket HTTP for tests that must control every byte and every pause (framing, slow clients), and one live
server per test module with its own database and settings (tests/live.py serves it as `stsweep serve` does)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.api.app import create_app
from service.context import Context
from service.settings import Settings
from service.store import optuna_bridge
from service.store.tokens import create_token
from tests import pg
from tests.live import serve_in_thread


@dataclass
class Served:
    base: str
    token: str
    ctx: Context
    artifacts: Path

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def auth(self) -> bytes:
        return b"Authorization: Bearer " + self.token.encode() + b"\r\n"

    def connect(self, timeout: float = 30.0) -> socket.socket:
        return socket.create_connection(self.address, timeout=timeout)


@contextmanager
def served(template_db: str, folder: Path, **overrides: Any) -> Iterator[Served]:
    """The real app under uvicorn over a fresh clone of the template database, with `overrides` set."""
    name = pg.unique_name("stsweep_t")
    url = pg.create_database(name, template=template_db)
    settings = Settings(database_url=url, home=folder / "home", artifact_root=str(folder / "artifacts"),
                        data_root=folder, _env_file=None, **overrides)  # type: ignore[call-arg]
    ctx = Context(settings, url)
    try:
        token = create_token(ctx.sessions, "tests")
        with serve_in_thread(create_app(ctx, run_reaper=False)) as base:
            yield Served(base, token, ctx, folder / "artifacts")
    finally:
        ctx.close()
        optuna_bridge.storage.cache_clear()
        pg.drop_database(name)


def read_answer(sock: socket.socket, deadline: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection or a whole answer (by Content-Length) is in."""
    data = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    return data


def status_of(answer: bytes) -> int:
    """The status code of a raw answer (0 when there was none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and answer.startswith(b"HTTP/") else 0


def chunked(payload: bytes, size: int = 65536) -> bytes:
    """`payload` in Transfer-Encoding: chunked framing."""
    out = [b"%x\r\n%s\r\n" % (len(payload[i:i + size]), payload[i:i + size]) for i in range(0, len(payload), size)]
    return b"".join(out) + b"0\r\n\r\n"


def exchange(server: Served, head: bytes, body: bytes = b"", deadline: float = 30.0) -> tuple[bytes, list[OSError]]:
    """Send `head` + `body` from a writer thread (as a client that keeps writing does) while reading the answer:
    (the answer, the errors the writer met: a reset while it was still writing)."""
    import threading

    failures: list[OSError] = []
    with server.connect(timeout=deadline) as sock:
        def write() -> None:
            try:
                sock.sendall(head + body)
            except OSError as exc:
                failures.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answer = read_answer(sock, deadline)
        writer.join(deadline)
    return answer, failures
