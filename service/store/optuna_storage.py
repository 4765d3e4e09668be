"""Optuna's RDB storage on our own engine: one connection pool per process for our tables and Optuna's.

Optuna's tables (`studies`, `trials`, ... and its `alembic_version`) live in their own schema, whose names clash
with ours. Every transaction of Optuna's begins with `SET LOCAL search_path` to that schema: transaction state,
which PgBouncer in transaction mode keeps with the transaction, unlike a connection-level `search_path` (a
startup `options` parameter or a plain `SET`), which it neither forwards nor keeps. Only connections taken
through the engine view built here (`in_schema`) do this; our own stay on the default path.

`RDBStorage` builds an engine of its own from a URL and runs its table and version checks on it; here that
engine opens one connection per statement (no pool) and is thrown away once the storage is built, and the
storage then runs on the shared pool.
"""

from __future__ import annotations

from typing import Any

import optuna
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import scoped_session, sessionmaker
from sqlalchemy.pool import NullPool

from service.store.optuna_history import ensure_indexes

SCHEMA_OPTION = "stsweep_search_path"  # an execution option: the schema a transaction's search_path is set to


@event.listens_for(Engine, "begin")
def _set_search_path(conn: Connection) -> None:
    schema = conn.get_execution_options().get(SCHEMA_OPTION)
    if schema is None:
        return
    quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
    # The first statement of the transaction (psycopg2 opens it implicitly); the Connection is mid-begin, so
    # the statement goes straight to the driver.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"SET LOCAL search_path TO {quoted}")
    finally:
        cursor.close()


def ensure_schema(engine: Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def in_schema(engine: Engine, schema: str) -> Engine:
    """`engine` (its pool and dialect) with every transaction's search_path set to `schema`."""
    return engine.execution_options(**{SCHEMA_OPTION: schema})


def on_engine(engine: Engine, schema: str) -> optuna.storages.RDBStorage:
    """Optuna's storage, its tables in `schema` (created if missing, with the indexes of the bounded history
    view), working on `engine`'s pool."""
    ensure_schema(engine, schema)
    url = engine.url.render_as_string(hide_password=False)
    kwargs: dict[str, Any] = {
        "poolclass": NullPool,
        "execution_options": {SCHEMA_OPTION: schema},
        "connect_args": {"connect_timeout": 5, "application_name": "stsweep-optuna-setup"},
    }
    store = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    store.engine.dispose()
    shared = in_schema(engine, schema)
    store.engine = shared
    store.scoped_session = scoped_session(sessionmaker(bind=shared))
    # The version checks (`upgrade`, `get_current_version`) go through the same engine.
    store._version_manager.engine = shared
    store._version_manager.scoped_session = store.scoped_session
    ensure_indexes(store)  # what the bounded view of a study's history reads through
    return store
