"""The PostgreSQL server bench/scale.py runs against: the shared one, or a private cluster with room for the
connections of hundreds of worker processes.

PostgreSQL's default `max_connections` is 100. When a run needs more than the shared server has free, a private
cluster is made (`pg_createcluster 15 NAME -p PORT -- --auth=trust`, started with `-c max_connections=N`) and
dropped at the end (`pg_dropcluster --stop`); the shared server's configuration is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SHARED_ADMIN_URL = os.environ.get(
    "STSWEEP_BENCH_ADMIN_URL",
    os.environ.get("STSWEEP_TEST_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
)
PG_VERSION = os.environ.get("STSWEEP_BENCH_PG_VERSION", "15")


def _scalar(admin_url: str, sql: str) -> int:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def free_connections(admin_url: str) -> int:
    """Connections the server still accepts (max_connections less those open and the superuser reserve)."""
    total = _scalar(admin_url, "SELECT setting::int FROM pg_settings WHERE name = 'max_connections'")
    reserved = _scalar(admin_url, "SELECT setting::int FROM pg_settings WHERE name = 'superuser_reserved_connections'")
    used = _scalar(admin_url, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
    return total - reserved - used


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_cluster(max_connections: int, log: object = print) -> Iterator[str]:
    """A fresh cluster with `max_connections`; yields its admin URL; dropped on exit."""
    if shutil.which("pg_createcluster") is None:
        raise RuntimeError("a private cluster needs pg_createcluster (postgresql-common)")
    name, port = f"scale{os.getpid()}{secrets.token_hex(2)}", _free_port()
    subprocess.run(["pg_createcluster", PG_VERSION, name, "-p", str(port), "--", "--auth=trust"],
                   check=True, capture_output=True)
    try:
        subprocess.run(["pg_ctlcluster", PG_VERSION, name, "start", "-o",
                        f"-c max_connections={max_connections}"],
                       check=True, capture_output=True)
        log(f"private cluster {PG_VERSION}/{name} on port {port}, max_connections {max_connections}")  # type: ignore[operator]
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, name], capture_output=True)


@contextmanager
def server_for(connections: int, force_private: bool = False, log: object = print) -> Iterator[str]:
    """The shared server's admin URL when it has `connections` free (with a margin), else a private cluster's."""
    if not force_private and free_connections(SHARED_ADMIN_URL) >= connections + 10:
        yield SHARED_ADMIN_URL
        return
    with private_cluster(connections + 40, log) as url:
        yield url


@contextmanager
def database(admin_url: str, prefix: str = "stsweep_scale") -> Iterator[str]:
    """A new empty database on the server of `admin_url`; yields its URL; dropped (WITH FORCE) on exit."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
