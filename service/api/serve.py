"""`stsweep serve`: the API and dashboard under uvicorn.

It starts whether or not the database answers: until the database is reachable and migrated, `/healthz`
answers 200 and every other path 503 `database_unavailable` (one log line says so), while a background thread
keeps trying, with backoff; once it succeeds the API serves normally and the lease reaper starts. A later outage
is a 503 per request (service/api/errors.py), and the API recovers by itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from service.context import Context

log = logging.getLogger("stsweep.api")

ALWAYS_SERVED = frozenset({"/healthz"})


class Readiness:
    """Prepares the database (reachable, migrated to head) in the background, with backoff, and then starts
    the reaper. `ready` is set once it succeeded."""

    def __init__(self, ctx: Context, *, base: float = 0.5, cap: float = 10.0) -> None:
        self.ctx = ctx
        self.ready = threading.Event()
        self.reason = "the database has not been reached yet"
        self.base, self.cap = base, cap
        self._stop = threading.Event()
        self.reaper: threading.Thread | None = None

    def try_once(self) -> bool:
        from service.local.bootstrap import try_prepare

        reason = try_prepare(self.ctx.database_url, self.ctx.settings)
        if reason is not None:
            self.reason = reason
            return False
        self._became_ready()
        return True

    def _became_ready(self) -> None:
        from service.store.maintenance import MaintenanceThread

        self.reaper = MaintenanceThread(self.ctx, self.ctx.settings.reaper_seconds)
        self.reaper.start()
        self.ready.set()

    def run_in_background(self) -> None:
        threading.Thread(target=self._keep_trying, name="stsweep-readiness", daemon=True).start()

    def _keep_trying(self) -> None:
        delay, started = self.base, time.monotonic()
        while not self._stop.wait(delay):
            try:
                if self.try_once():
                    log.warning("database reachable after %.0f s: serving", time.monotonic() - started)
                    return
            except Exception as exc:  # noqa: BLE001 - keep serving 503 (and /healthz) rather than die
                self.reason = f"the database cannot be prepared: {type(exc).__name__}: {exc}"
                log.error("%s; retrying", self.reason)
            delay = min(self.cap, delay * 2)

    def stop(self) -> None:
        self._stop.set()
        if self.reaper is not None:
            self.reaper.stop()  # type: ignore[attr-defined]


class ReadinessGate:
    """Outermost ASGI layer: while the database is not ready, /healthz passes and everything else is a 503 in
    the API's one error shape (no database work at all: no token check, no route)."""

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.readiness.ready.is_set()
                or scope.get("path") in ALWAYS_SERVED):
            await self.app(scope, receive, send)
            return
        from service.api.errors import error_body

        body = json.dumps(error_body("database_unavailable", f"{self.readiness.reason}; retrying")).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"5")]})
        await send({"type": "http.response.body", "body": body})


def serve_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.api.http_server import uvicorn_config
    from service.context import Context
    from service.local.embedded_pg import database_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = Context(settings, database_url(settings), application_name="stsweep-api")
    readiness = Readiness(ctx)
    if not readiness.try_once():
        log.warning("database not reachable (%s): serving /healthz only, 503 elsewhere, until it answers",
                    readiness.reason)
        readiness.run_in_background()
    try:
        app = ReadinessGate(create_app(ctx, run_reaper=False), readiness)
        uvicorn.Server(uvicorn_config(app, settings, host=host, port=port, log_level="info")).run()
    finally:
        readiness.stop()
        ctx.close()
