"""Everything a running control plane holds: settings, database engine and session factory, Optuna storage.

Built once at an entry point (`stsweep serve`, `stsweep worker`, tests) from one Settings object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from service.store.db import SessionFactory, make_engine, make_sessionmaker
from service.settings import Settings

if TYPE_CHECKING:
    import optuna
    from sqlalchemy import Engine

    from service.artifacts.store import ArtifactStore


@dataclass
class Context:
    """`pool_size`: connections kept open at rest, for our tables and Optuna's together (one pool);
    `max_overflow` more (default `pool_size`) open for a burst. `application_name` names the process in
    `pg_stat_activity`."""

    settings: Settings
    database_url: str
    pool_size: int = 10
    max_overflow: int | None = None
    application_name: str = "stsweep"
    engine: Engine = field(init=False)
    sessions: SessionFactory = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.database_url, pool_size=self.pool_size, max_overflow=self.max_overflow,
                                  application_name=self.application_name)
        self.sessions = make_sessionmaker(self.engine)

    @cached_property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's storage on this context's engine: its connections come out of the same pool as ours."""
        from service.store import optuna_storage

        return optuna_storage.on_engine(self.engine, self.settings.optuna_schema)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from service.artifacts.factory import open_store

        return open_store(self.settings)

    def close(self) -> None:
        self.engine.dispose()
