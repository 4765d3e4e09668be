"""The request body as the app reads it, counted and timed at the ASGI `receive` level (api/guard.py puts one
in front of every request, JSON, multipart or any other, with or without Content-Length, chunked or not):

- every byte counts against the route's limit (PayloadTooLarge once past it, before the app sees the chunk);
- each chunk must arrive within `idle_seconds` of the one before (RequestTimeout otherwise);
- `drain` reads and discards what a client still sends after it was answered early (bounded in bytes, in total
  time and in idle time), so a client that is still writing reads the answer instead of a reset connection.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import Message, Receive

from service.core.errors import PayloadTooLarge, RequestTimeout

DRAIN_MAX_BYTES = 64 * 1024 * 1024  # most bytes read and discarded after an early answer
DRAIN_MAX_SECONDS = 10.0  # most time spent doing so
DRAIN_IDLE_SECONDS = 1.0  # a client silent this long has stopped writing


class MeteredBody:
    def __init__(self, receive: Receive, *, limit: int, setting: str, idle_seconds: float,
                 declared: int | None, chunked: bool) -> None:
        self._receive = receive
        self.limit = limit
        self.setting = setting
        self.idle_seconds = idle_seconds
        self.declared = declared
        self.received = 0
        self.done = not chunked and not declared  # no body at all: nothing to wait for
        self.stalled = False

    async def receive(self) -> Message:
        if self.done:  # the body is read: what is left is the disconnect, which may take as long as it takes
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.idle_seconds)
        except asyncio.TimeoutError:
            self.stalled = True
            raise RequestTimeout(f"no part of the request body arrived for {self.idle_seconds:g} s "
                                 "(STSWEEP_BODY_TIMEOUT_SECONDS)", field="body") from None
        self._count(message)
        if self.received > self.limit:
            raise PayloadTooLarge(self.too_large(), field="body")
        return message

    def too_large(self) -> str:
        return f"the request body is over the limit of {self.limit} bytes ({self.setting})"

    def worth_draining(self) -> bool:
        """Whether what the client may still send is small enough to read and discard rather than cut off."""
        if self.done or self.stalled:
            return False
        return self.declared is None or self.declared - self.received <= DRAIN_MAX_BYTES

    async def drain(self) -> None:
        """Read and discard the rest of the body, within DRAIN_MAX_BYTES / DRAIN_MAX_SECONDS."""
        deadline = time.monotonic() + DRAIN_MAX_SECONDS
        start = self.received
        while not self.done and self.received - start <= DRAIN_MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(self._receive(), min(left, DRAIN_IDLE_SECONDS))
            except asyncio.TimeoutError:
                return
            self._count(message)

    def _count(self, message: Message) -> None:
        if message["type"] == "http.disconnect":
            self.done = True
            return
        self.received += len(message.get("body", b""))
        if not message.get("more_body", False):
            self.done = True
