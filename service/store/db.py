"""Engines and the one scoped-session helper. Nothing else commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import DatabaseUnavailable

# What the rest of the code passes around to reach the database, without importing SQLAlchemy itself.
SessionFactory: TypeAlias = sessionmaker[Session]


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None,
                application_name: str = "stsweep") -> Engine:
    """An engine for our tables (and, through `optuna_storage.on_engine`, Optuna's). pre_ping: long trials leave
    connections idle for an hour. The pool keeps at most `pool_size` connections open at rest; `max_overflow`
    more (default `pool_size`) are opened for a burst and closed when returned. Nothing here keeps session
    state (no startup `options`, no SET, no server-side prepared statements), so the URL may name PgBouncer
    in transaction mode; `application_name` tells the processes apart in `pg_stat_activity`."""
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 60,
                      "application_name": application_name},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on failure; connection failures become DatabaseUnavailable."""
    session = factory()
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise DatabaseUnavailable("the database is unreachable") from exc
    except DBAPIError as exc:
        session.rollback()
        if exc.connection_invalidated:
            raise DatabaseUnavailable("the database connection was lost") from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable("the database is unreachable") from exc


def transient_reason(exc: BaseException) -> str | None:
    """Why `exc` is a transient database fault worth retrying (connection refused or reset, the server
    restarting or shutting down, a serialization failure or deadlock), whether it was raised through
    `session_scope` or by Optuna's storage (which wraps SQLAlchemy's errors in its own); None otherwise.
    Only the cause chain is read: LeaseLost and every other domain error are never transient."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable):
            cause = current.__cause__
            return f"{current.message}: {_first_line(cause)}" if cause is not None else current.message
        if isinstance(current, OperationalError):
            return f"the database is unreachable: {_first_line(current.orig)}"
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return f"the database connection was lost: {_first_line(current.orig)}"
        current = current.__cause__
    return None


def _first_line(exc: BaseException | None) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0][:200] if text_ else type(exc).__name__


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot be reached, when `exc` (raised outside `session_scope`, e.g. by Optuna's storage)
    says so; None for any other error."""
    if isinstance(exc, OperationalError):
        return "the database is unreachable"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "the database connection was lost"
    return None
