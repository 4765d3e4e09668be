"""One holder per deployment for an elected job (the maintenance round): a lease row in `maintenance_lease`.

Taken and renewed with one short UPDATE ... WHERE the lease ran out (or is already ours), given up with another:
no session-level advisory lock, no LISTEN, no state kept on a connection between transactions, so it works
through PgBouncer in transaction mode. A holder that dies (SIGKILL, a lost node) simply stops renewing: once
`expires_at` passes, the next process that asks takes the job over.
"""

from __future__ import annotations

import os
import socket
import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope

MAINTENANCE = "maintenance"


def holder_name() -> str:
    """Who a process is in the lease row: host, pid and a random part (a restarted pid is someone else)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def take(factory: sessionmaker[Session], holder: str, seconds: float, name: str = MAINTENANCE) -> bool:
    """Take the lease (or renew it, when it is already ours) for `seconds` from now. False while another
    holder's lease runs. The row is created on first use."""
    with session_scope(factory) as s:
        s.execute(text("INSERT INTO maintenance_lease (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"),
                  {"n": name})
        return s.execute(text("""
            UPDATE maintenance_lease SET holder = :h, expires_at = now() + make_interval(secs => :secs)
            WHERE name = :n AND (holder = :h OR expires_at < now())
            RETURNING name
        """), {"n": name, "h": holder, "secs": seconds}).first() is not None


def renew(factory: sessionmaker[Session], holder: str, seconds: float, name: str = MAINTENANCE) -> bool:
    """Extend a lease this holder still has; False once it ran out and someone else took it (stop working)."""
    with session_scope(factory) as s:
        return s.execute(text("""
            UPDATE maintenance_lease SET expires_at = now() + make_interval(secs => :secs)
            WHERE name = :n AND holder = :h AND expires_at >= now()
            RETURNING name
        """), {"n": name, "h": holder, "secs": seconds}).first() is not None


def finished_round(factory: sessionmaker[Session], holder: str, name: str = MAINTENANCE) -> None:
    """Count one round done by this holder (what operators and tests read to see who runs the rounds)."""
    with session_scope(factory) as s:
        s.execute(text("UPDATE maintenance_lease SET rounds = rounds + 1 WHERE name = :n AND holder = :h"),
                  {"n": name, "h": holder})


def release(factory: sessionmaker[Session], holder: str, name: str = MAINTENANCE) -> None:
    """Give the lease up (a clean stop), so another process takes the job at its next try, not at expiry."""
    with session_scope(factory) as s:
        s.execute(text("UPDATE maintenance_lease SET expires_at = '-infinity' WHERE name = :n AND holder = :h"),
                  {"n": name, "h": holder})


def current_holder(factory: sessionmaker[Session], name: str = MAINTENANCE) -> str | None:
    """The holder whose lease runs now, if any."""
    with session_scope(factory) as s:
        return s.execute(text("SELECT holder FROM maintenance_lease WHERE name = :n AND expires_at >= now()"),
                         {"n": name}).scalar_one_or_none()
