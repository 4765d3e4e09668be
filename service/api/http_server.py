"""uvicorn as stsweep serves the app (`stsweep serve`, hence `stsweep up`, and tests/live.py): with a header
timeout, which uvicorn lacks.

uvicorn's h11 protocol holds a connection for as long as its request line and headers take to arrive: a client
sending one header byte a second (slow loris) keeps it forever, no token needed. `header_timed_protocol` arms a
timer when a connection opens and whenever it goes back to waiting for a request, and cancels it once h11 has
the whole request head; past STSWEEP_HEADER_TIMEOUT_SECONDS the connection is closed (with a 408 when part of a
request had arrived). The body's own timeout (STSWEEP_BODY_TIMEOUT_SECONDS, between two chunks) is kept at the
ASGI level, by the request guard (api/body_meter.py). h11 is always used (httptools, when installed, would be
picked by uvicorn's "auto" and has no such hook here).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

_WHY = b"the request headers did not arrive in time (STSWEEP_HEADER_TIMEOUT_SECONDS)"
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
             b"content-length: " + str(len(_WHY)).encode() + b"\r\n\r\n" + _WHY)


def header_timed_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than `header_timeout`."""

    class HeaderTimedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            self._watch_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_head()

        def _watch_head(self) -> None:
            """Armed while the connection waits for (the rest of) a request head, from the moment it started."""
            waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting and self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)
            elif not waiting:
                self._cancel_head_timer()

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            if self.conn.trailing_data[0]:  # part of a request arrived: say why it ends
                self.transport.write(TIMED_OUT)
            self.transport.close()

    return HeaderTimedH11Protocol


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """A uvicorn.Config for `app` with the settings' header timeout (the body timeout is the guard's)."""
    return uvicorn.Config(app, http=header_timed_protocol(settings.header_timeout_seconds), **options)
