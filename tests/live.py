"""A real uvicorn server in a thread on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service.settings import Settings


@contextmanager
def serve_in_thread(app: Any, timeout: float = 30.0, settings: Settings | None = None) -> Iterator[str]:
    """Serve `app` as `stsweep serve` does (service/api/http_server.py: the header timeout of `settings`, by
    default those of the app's context, else the defaults); yields its base URL and stops the server on exit."""
    import uvicorn

    from service.api.http_server import uvicorn_config

    if settings is None:
        ctx = getattr(getattr(app, "state", None), "ctx", None)
        settings = ctx.settings if ctx is not None else Settings(_env_file=None)  # type: ignore[call-arg]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(15)
        sock.close()
