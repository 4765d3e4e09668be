"""A real PgBouncer (Debian's `pgbouncer`) in transaction pool mode in front of the test PostgreSQL.

Started on a free loopback port with its ini and userlist in a folder of its own; every database of the server
is reachable through it under the same name. Run as root, it drops to the `postgres` (else `nobody`) user, as
PgBouncer refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url

from tests import pg

BINARY = "pgbouncer"


def available() -> str | None:
    """The pgbouncer binary's path, or None (scripts/test installs Debian's `pgbouncer` when run as root)."""
    return shutil.which(BINARY) or next((p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class Bouncer:
    port: int
    user: str
    password: str | None
    log: Path

    def url_for(self, database_url: str) -> str:
        """`database_url` (a database of the test server) reached through this PgBouncer instead."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def show(self, what: str) -> list[dict[str, Any]]:
        """`SHOW <what>` on PgBouncer's admin console (CLIENTS, SERVERS, POOLS, ...), as dicts."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname="pgbouncer", user=self.user,
                                password=self.password, connect_timeout=5)
        try:
            conn.autocommit = True  # the admin console has no transactions
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return ["-u", name]
        except KeyError:
            continue
    return []


@contextmanager
def pgbouncer(pool_size: int = 10, max_client_conn: int = 200) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the test server; stopped (and its folder removed) on exit."""
    binary = available()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = make_url(pg.admin_url())
    user, password = server.username or "postgres", server.password
    folder = Path(tempfile.mkdtemp(prefix="stsweep-pgbouncer-"))
    folder.chmod(0o755)  # read by the unprivileged user PgBouncer drops to
    port = _free_port()
    secret = (password or "").replace('"', '""')
    (folder / "userlist.txt").write_text(f'"{user}" "{secret}"\n')
    (folder / "pgbouncer.ini").write_text(f"""[databases]
* = host={server.host or '127.0.0.1'} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'userlist.txt'}
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
server_lifetime = 3600
server_idle_timeout = 60
""")
    for f in folder.iterdir():
        f.chmod(0o644)
    log = folder / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, *_run_as(), str(folder / "pgbouncer.ini")], stdout=out,
                                stderr=subprocess.STDOUT)
    bouncer = Bouncer(port, user, password, log)
    try:
        _wait_ready(bouncer, proc)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(bouncer: Bouncer, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited {proc.returncode}: {bouncer.log.read_text(errors='replace')}")
        try:
            bouncer.show("VERSION")
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
