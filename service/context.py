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
    settings: Settings
    database_url: str
    engine: Engine = field(init=False)
    sessions: SessionFactory = field(init=False)

    def __post_init__(self) -> None:
        self.engine = make_engine(self.database_url)
        self.sessions = make_sessionmaker(self.engine)

    @cached_property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        from service.store import optuna_bridge

        return optuna_bridge.storage(self.database_url, self.settings.optuna_schema)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from service.artifacts.factory import open_store

        return open_store(self.settings)

    def close(self) -> None:
        self.engine.dispose()
