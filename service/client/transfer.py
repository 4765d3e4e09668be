"""The client's guards on what a server sends: bodies bounded in size and rate, headers bounded in total time.

httpx bounds each socket read (``read_timeout``) but not a whole answer: a server that drips a byte every few
seconds passes every per-read timeout forever. Two guards close that:

- ``chunks`` yields a response body's bytes and fails (``TransferTooLarge`` past ``limit`` bytes,
  ``TransferTooSlow`` when fewer than ``min_rate`` bytes per second arrived on average over a window of
  ``window`` seconds);
- ``HeaderDeadline`` follows a request through httpx's ``trace`` extension and, when its answer's headers have
  not all arrived ``seconds`` after the request was sent, shuts the connection's socket down, which ends the
  blocked read at once; the request then fails and ``fired`` says why.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx


class TransferTooLarge(Exception):
    """A body went past its byte limit."""


class TransferTooSlow(Exception):
    """A body arrived slower than the minimum rate."""


def chunks(response: httpx.Response, *, limit: int, min_rate: int, window: float, raw: bool = False
           ) -> Iterator[bytes]:
    """``response``'s body (decoded, or as sent with ``raw``) in chunks, bounded by ``limit`` bytes in total and
    by ``min_rate`` bytes per second over each ``window`` seconds (0: no floor)."""
    received = 0
    window_start, window_bytes = time.monotonic(), 0
    for chunk in (response.iter_raw() if raw else response.iter_bytes()):
        received += len(chunk)
        if received > limit:
            raise TransferTooLarge(f"more than {limit:,} bytes")
        window_bytes += len(chunk)
        now = time.monotonic()
        if min_rate and now - window_start >= window:
            if window_bytes < min_rate * (now - window_start):
                raise TransferTooSlow(f"{window_bytes:,} bytes in {now - window_start:.1f} s, less than "
                                      f"{min_rate:,} bytes per second")
            window_start, window_bytes = now, 0
        yield chunk


class HeaderDeadline:
    """A request's answer must have all its headers ``seconds`` after the request went out. Pass ``trace`` as
    the request's ``trace`` extension; the connection must be new (no keep-alive), so its socket is seen."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._sock: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self._sock = sock
        elif event == "http11.receive_response_headers.started":
            self._arm()
        elif event.startswith("http11.receive_response_headers."):
            self.cancel()

    def _arm(self) -> None:
        timer = threading.Timer(self.seconds, self._fire)
        timer.daemon = True
        with self._lock:
            self.cancel_locked()
            self._timer = timer
        timer.start()  # outside the lock: a Ctrl-C while the thread starts never leaves the lock held

    def _fire(self) -> None:
        with self._lock:
            if self._timer is None or self._sock is None:
                return
            self.fired = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel(self) -> None:
        """Disarm. Never waits long on the lock: `_fire` holds it only for a socket shutdown, and a cancel on
        the way out of a Ctrl-C must not hang the command."""
        locked = self._lock.acquire(timeout=1.0)
        try:
            self.cancel_locked()
        finally:
            if locked:
                self._lock.release()
