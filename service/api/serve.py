"""`stsweep serve`: the API and dashboard under uvicorn, after the database is ready."""

from __future__ import annotations

import logging

from service.settings import Settings


def serve_api(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.context import Context
    from service.local.bootstrap import prepare_database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ctx = Context(settings, prepare_database(settings))
    try:
        uvicorn.run(create_app(ctx), host=host, port=port, log_level="info")
    finally:
        ctx.close()
