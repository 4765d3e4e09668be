"""Our schema comes only from Alembic, matches the models, and round-trips; Optuna lives apart."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from service.store import migrate, optuna_bridge
from service.store.models import Base


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str, schema: str = "public") -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_models(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert _diff(empty_database) == []
    assert {"studies", "trials", "intermediate_values", "workers", "api_tokens", "datasets",
            migrate.VERSION_TABLE} <= _tables(empty_database)
    assert "alembic_version" not in _tables(empty_database)


def test_downgrade_and_upgrade_round_trip(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    assert _tables(empty_database) == {migrate.VERSION_TABLE}
    migrate.upgrade(empty_database)
    assert _diff(empty_database) == []


def test_optuna_tables_live_in_their_own_schema(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    optuna_bridge.storage(empty_database, "optuna")
    optuna_tables = _tables(empty_database, "optuna")
    assert {"studies", "trials", "alembic_version"} <= optuna_tables
    # Our `studies` is untouched by Optuna's `studies`, and our version table is ours alone.
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        cols = {r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema='public' AND table_name='studies'"))}
        version = conn.execute(text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).scalar_one()
    engine.dispose()
    assert "optuna_study_name" in cols
    heads = ScriptDirectory.from_config(migrate.alembic_config(empty_database)).get_heads()
    assert heads == [version], f"one linear history ending at the applied revision: heads {heads}, db {version}"


def test_updates_bump_the_change_cursor(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO studies (id, name, spec, optuna_study_name, n_trials, max_concurrent_trials, "
                          "max_attempts, direction) VALUES ('st_0', 'x', '{}', 'o', 1, 1, 1, 'maximize')"))
        first = conn.execute(text("SELECT seq FROM studies")).scalar_one()
        conn.execute(text("UPDATE studies SET status = 'paused'"))
        second = conn.execute(text("SELECT seq FROM studies")).scalar_one()
    engine.dispose()
    assert second > first
