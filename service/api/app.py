"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import errors, routes_dashboard, routes_health, routes_studies
from service.api.guard import RequestGuard
from service.api import routes_checkpoints, routes_datasets, routes_projects, routes_tokens
from service.api import metrics
from service.api import openapi
from service.context import Context
from service.store.maintenance import MaintenanceThread

log = logging.getLogger("stsweep.api")


def create_app(ctx: Context, *, run_reaper: bool = True) -> FastAPI:
    """The API over one context. The elected maintenance (reaper and reconciler) runs beside it unless
    `run_reaper` is False (tests drive it)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = MaintenanceThread(ctx, ctx.settings.reaper_seconds) if run_reaper else None
        if reaper:
            reaper.start()
        try:
            yield
        finally:
            if reaper:
                reaper.stop()

    app = FastAPI(
        title="stsweep",
        version="0.1.0",
        summary="Hyperparameter sweeps for fine-tuning Sentence Transformers.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(RequestGuard, ctx=ctx)
    errors.install(app)
    app.include_router(routes_health.router)
    app.include_router(routes_studies.router)
    app.include_router(routes_datasets.router)
    app.include_router(routes_checkpoints.router)
    app.include_router(routes_tokens.router)
    app.include_router(routes_projects.router)
    app.include_router(routes_dashboard.router)
    metrics.install(app)  # /metrics, and the latency middleware: outermost, after every other middleware
    openapi.install(app)  # every status each operation can answer, with the error schema
    return app
