"""Fresh PostgreSQL databases for tests: one migrated template per run, one clone per test."""

from __future__ import annotations

import functools
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@functools.cache
def admin_url() -> str:
    """STSWEEP_TEST_ADMIN_URL, else the local server on 5432, else (a fresh machine without one) a private
    server from the `pgserver` wheel, so the suite always runs on real PostgreSQL."""
    configured = os.environ.get("STSWEEP_TEST_ADMIN_URL")
    if configured:
        return configured
    engine = create_engine(LOCAL_SERVER, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return LOCAL_SERVER
    except OperationalError:
        if os.environ.get("CI"):
            raise
    finally:
        engine.dispose()
    import pgserver

    server = pgserver.get_server(tempfile.mkdtemp(prefix="stsweep-test-pg-"), cleanup_mode="delete")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)


def url_for(name: str) -> str:
    return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


@contextmanager
def _admin() -> Iterator[Any]:
    engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def create_database(name: str, template: str | None = None) -> str:
    with _admin() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    return url_for(name)


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
