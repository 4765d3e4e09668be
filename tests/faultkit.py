"""What the fault tests share: a private PostgreSQL cluster a test may stop and start, studies created the way
the API creates them (ours and Optuna's), small training studies on the bundled pairs, and checks that nothing
was lost (every trial ended, no duplicate point, Optuna agreeing with our tables)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.context import Context
from service.core.spec import StudySpec
from service.settings import Settings
from service.store import migrate, optuna_bridge, reconcile, studies
from service.store.db import session_scope
from tests.pairs import pair_rows, write_jsonl

def _pg_version() -> str:
    """The newest PostgreSQL major version installed the Debian way (/usr/lib/postgresql/<version>)."""
    found = sorted((int(p.name) for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()), reverse=True)
    return str(found[0]) if found else "15"


PG_VERSION = _pg_version()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """`pg_createcluster` on a free port (trust auth), one database in it, migrated; stop() / start() for
    outages. Needs the Debian postgresql-common tools (scripts/test installs PostgreSQL)."""

    def __init__(self) -> None:
        self.name = f"stsweep_{os.getpid()}_{secrets.token_hex(3)}"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/stsweep"

    def create(self) -> None:
        subprocess.run(["pg_createcluster", PG_VERSION, self.name, "-p", str(self.port), "--", "--auth=trust"],
                       check=True, capture_output=True)
        self.start()
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c",
                        "CREATE DATABASE stsweep"], check=True, capture_output=True)
        migrate.upgrade(self.url)
        optuna_bridge.ensure_schema(self.url, "optuna")

    def start(self) -> None:
        subprocess.run(["pg_ctlcluster", PG_VERSION, self.name, "start"], check=True, capture_output=True)

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, new ones are refused until start()."""
        subprocess.run(["pg_ctlcluster", PG_VERSION, self.name, "stop", "-m", "fast"], check=True,
                       capture_output=True)

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", PG_VERSION, self.name], capture_output=True)


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.create()
        yield cluster
    finally:
        optuna_bridge.storage.cache_clear()
        cluster.drop()


def settings_for(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(database_url=url, home=tmp_path / "home", artifact_root=str(tmp_path / "artifacts"),
                                  data_root=tmp_path / "data", lease_seconds=30, heartbeat_seconds=1,
                                  poll_seconds=0.2, reaper_seconds=1)
    values.update(overrides)
    return Settings(**values, _env_file=None)  # type: ignore[call-arg]


def create_study(ctx: Context, body: dict[str, Any]) -> str:
    """A study as POST /v1/studies creates it (Optuna's side first, then ours), without data set checks."""
    spec = StudySpec.model_validate(body)
    study_id = studies.new_study_id()
    name = f"stsweep-{study_id}"
    optuna_bridge.create_study(ctx.optuna_storage, name, spec)
    studies.insert_study(ctx.sessions, study_id, name, spec, None, {})
    return study_id


def write_pairs(data_root: Path, train: int = 192, dev: int = 48, test: int = 48) -> None:
    (data_root / "pairs").mkdir(parents=True, exist_ok=True)
    write_jsonl(data_root / "pairs" / "train.jsonl", pair_rows("train", train, seed=1))
    write_jsonl(data_root / "pairs" / "dev.jsonl", pair_rows("dev", dev, seed=2))
    write_jsonl(data_root / "pairs" / "test.jsonl", pair_rows("test", test, seed=3))


def tiny_study(name: str, *, every: int = 32, train: int = 128, **overrides: Any) -> dict[str, Any]:
    """A study whose trials take seconds on two CPU cores: 128 pairs, short sequences, evaluation on 24 pairs."""
    body: dict[str, Any] = {
        "name": name,
        "task": "scored_pairs",
        "data": {"train": {"path": "pairs/train.jsonl"}, "eval": {"path": "pairs/dev.jsonl"},
                 "score_range": [0, 5], "max_train_samples": train},
        "search_space": {
            "learning_rate": {"distribution": "float", "low": 2e-5, "high": 6e-5, "log": True},
            "per_device_train_batch_size": 16, "max_seq_length": 32, "warmup_ratio": 0.0, "loss": "CoSENTLoss"},
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
        "evaluation": {"every_n_examples": every, "max_eval_samples": 24},
        "budget": {"n_trials": 2, "max_concurrent_trials": 2},
        "max_attempts": 5,
    }
    body.update(overrides)
    return body


def rows(ctx: Context, sql: str, **params: Any) -> list[Any]:
    with session_scope(ctx.sessions) as s:
        return list(s.execute(text(sql), params).all())


def one(ctx: Context, sql: str, **params: Any) -> Any:
    found = rows(ctx, sql, **params)
    return found[0] if found else None


def study_status(ctx: Context, study_id: str) -> str:
    return str(one(ctx, "SELECT status FROM studies WHERE id = :s", s=study_id).status)


def trials_of(ctx: Context, study_id: str) -> list[Any]:
    return rows(ctx, """SELECT id, number, state, attempts, value, params, failure_reason, checkpoint_key,
                               checkpoint_sha256, resume_key, history, fault_count, optuna_trial_id
                        FROM trials WHERE study_id = :s ORDER BY number""", s=study_id)


def points(ctx: Context, trial_id: int) -> list[int]:
    return [r.examples_seen for r in rows(ctx, "SELECT examples_seen FROM intermediate_values WHERE trial_id = :t "
                                                "ORDER BY examples_seen", t=trial_id)]


def assert_nothing_lost(ctx: Context, study_id: str, n_trials: int, every: int, planned: int) -> None:
    """Every slot ended complete or pruned (none failed, none left), each reported every point once up to where
    it stopped, Optuna holds exactly our states and values, and nothing runs in Optuna."""
    found = trials_of(ctx, study_id)
    assert len(found) == n_trials, [(t.number, t.state) for t in found]
    for t in found:
        assert t.state in ("complete", "pruned"), (t.number, t.state, t.failure_reason, t.history)
        got = points(ctx, t.id)
        assert got == [every * k for k in range(1, len(got) + 1)], (t.number, got)
        if t.state == "complete":
            assert got[-1] == planned - planned % every, (t.number, got)
    assert reconcile.disagreements(ctx, study_id) == []
    storage = ctx.optuna_storage
    name = one(ctx, "SELECT optuna_study_name FROM studies WHERE id = :s", s=study_id).optuna_study_name
    frozen = {t._trial_id: t for t in storage.get_all_trials(storage.get_study_id_from_name(name))}
    for t in found:
        o = frozen[t.optuna_trial_id]
        if t.state == "complete":
            assert o.value == t.value, (t.number, o.value, t.value)
        assert sorted(o.intermediate_values) == points(ctx, t.id), (t.number, o.intermediate_values)


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
