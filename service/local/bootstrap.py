"""Start-up steps shared by `serve`, `up`, `db upgrade` and `token create`: wait for the database, migrate,
create Optuna's schema, then serve."""

from __future__ import annotations

import logging
import time

from service.store import migrate, optuna_bridge
from service.local.embedded_pg import database_url
from service.core.errors import DatabaseUnavailable
from service.settings import Settings

log = logging.getLogger("stsweep")


def wait_for_database(url: str, timeout: float = 30.0) -> None:
    from service.store.db import make_engine, ping

    engine = make_engine(url, pool_size=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                ping(engine)
                return
            except DatabaseUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        engine.dispose()


def prepare_database(settings: Settings) -> str:
    """The database URL, after the server answered and the schema is at head."""
    url = database_url(settings)
    wait_for_database(url)
    migrate_to_head(url, settings)
    return url


def migrate_to_head(url: str, settings: Settings) -> None:
    migrate.upgrade(url)
    optuna_bridge.ensure_schema(url, settings.optuna_schema)


def try_prepare(url: str, settings: Settings) -> str | None:
    """One try at `prepare_database` on `url`: None once the schema is at head, else why the database is
    not usable yet (unreachable, restarting). Other errors (a broken migration) are raised."""
    from service.store.db import transient_reason

    try:
        wait_for_database(url, timeout=0)
        migrate_to_head(url, settings)
    except Exception as exc:  # noqa: BLE001 - classified right below
        reason = transient_reason(exc)
        if reason is None:
            raise
        return reason
    return None
