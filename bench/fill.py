"""A fresh database holding one big study, in our tables and (the same trials) in Optuna's, for the benchmarks.

    .venv/bin/python bench/fill.py [--trials 20000] [--optuna-method sql|add_trials] [--keep]

The study is created through the real API code path (`POST /v1/studies` on the app, which creates the Optuna
study and our 20,000 queued slots); then the trials are written in bulk (COPY), not through the queue:
4 params each (learning_rate, per_device_train_batch_size, warmup_ratio, loss), mostly complete, some
pruned / failed, a few running, 4 intermediate values each (examples_seen 256/512/768/1024).
The same trials go into Optuna's own tables (schema `optuna`), either by COPY (`sql`, default, seconds) or
through `study.add_trials(create_trial(...))` (`add_trials`, Optuna's public API; much slower).

Library use (bench/api_bench.py and the dashboard benchmark):

    with filled_study(n_trials=20_000) as f:
        f.database_url, f.study_id, f.optuna_study_id, f.token, f.settings, f.timings
    # the database is dropped on exit
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    distribution_to_json,
)
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from service.store import migrate, optuna_bridge  # noqa: E402
from service.store.tokens import create_token  # noqa: E402
from service.context import Context  # noqa: E402
from service.settings import Settings  # noqa: E402

ADMIN_URL = os.environ.get(
    "STSWEEP_BENCH_ADMIN_URL",
    os.environ.get("STSWEEP_TEST_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
)
OPTUNA_SCHEMA = "optuna"
STEPS = (256, 512, 768, 1024)  # examples seen at each evaluation
BATCH_SIZES = [16, 32, 64]
LOSSES = ["CoSENTLoss", "CosineSimilarityLoss"]
DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-6, 1e-4, log=True),
    "per_device_train_batch_size": CategoricalDistribution(BATCH_SIZES),
    "warmup_ratio": FloatDistribution(0.0, 0.2),
    "loss": CategoricalDistribution(LOSSES),
}
N_RUNNING = 4  # = max_concurrent_trials below

STUDY_BODY: dict[str, Any] = {
    "name": "bench-20k",
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "task": "scored_pairs",
    "data": {"train": {"path": "stsb/train.jsonl"}, "eval": {"path": "stsb/dev.jsonl"},
             "test": {"path": "stsb/test.jsonl"},
             "columns": {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"}},
    "objective": {"metric": "spearman_cosine", "direction": "maximize"},
    "search_space": {
        "learning_rate": {"distribution": "float", "low": 1e-6, "high": 1e-4, "log": True},
        "per_device_train_batch_size": {"distribution": "categorical", "choices": BATCH_SIZES},
        "num_train_epochs": 1,
        "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2},
        "weight_decay": 0.01,
        "loss": {"distribution": "categorical", "choices": LOSSES}},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "median"},
    "evaluation": {"every_n_examples": 256, "max_eval_samples": 500, "early_stopping_patience": 3},
    "budget": {"n_trials": 20_000, "max_concurrent_trials": N_RUNNING},
    "max_attempts": 3,
}


# ------------------------------------------------------------------ databases


def _admin_engine():  # type: ignore[no-untyped-def]
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def create_database(prefix: str = "stsweep_bench") -> tuple[str, str]:
    """(name, url) of a new empty database."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def make_settings(database_url: str, workdir: Path) -> Settings:
    """Settings for a bench server: nothing read from the environment or a .env file."""
    data_root = workdir / "data"
    (data_root / "stsb").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):  # check_refs only needs the files to exist
        (data_root / "stsb" / f"{split}.jsonl").write_text(
            '{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    return Settings(
        database_url=database_url, optuna_schema=OPTUNA_SCHEMA, home=workdir / "home",
        artifact_root=str(workdir / "artifacts"), data_root=data_root,
        _env_file=None,  # type: ignore[call-arg]
    )


# ------------------------------------------------------------------ the trials


@dataclass
class TrialRow:
    number: int
    state: str  # ours: complete | pruned | failed | running
    params: dict[str, Any]
    value: float | None
    intermediate: list[tuple[int, float]]
    attempts: int
    failure_reason: str | None
    started_at: datetime
    finished_at: datetime | None


def generate_trials(n: int, seed: int = 0) -> list[TrialRow]:
    """Deterministic trials: ~85% complete, ~10% pruned, ~5% failed, the last N_RUNNING running."""
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        params = {
            "learning_rate": math.exp(rng.uniform(math.log(1e-6), math.log(1e-4))),
            "per_device_train_batch_size": rng.choice(BATCH_SIZES),
            "warmup_ratio": rng.uniform(0.0, 0.2),
            "loss": rng.choice(LOSSES),
        }
        r = rng.random()
        state = "running" if i >= n - N_RUNNING else "complete" if r < 0.85 else "pruned" if r < 0.95 else "failed"
        final = 0.80 + 0.08 * rng.random()
        curve = [round(final - 0.04 * (len(STEPS) - k - 1) / len(STEPS) + rng.gauss(0, 0.003), 6)
                 for k in range(len(STEPS))]
        points = list(zip(STEPS, curve, strict=True))
        started = t0 + timedelta(seconds=60 * i)
        value = curve[-1] if state in ("complete", "pruned") else None  # Optuna: pruned = last intermediate
        attempts = 1 if state != "failed" else rng.choice([1, 3])
        reason = None
        if state == "failed":
            reason = ("CUDA out of memory" if attempts == 1
                      else "lease expired on attempt 3 of 3 (worker lost); no attempts left")
        rows.append(TrialRow(i, state, params, value, points, attempts, reason, started,
                             None if state == "running" else started + timedelta(seconds=55)))
    return rows


def _copy(cur: Any, table_sql: str, rows: list[tuple[Any, ...]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in rows:
        w.writerow(r)  # None -> unquoted empty field -> NULL
    buf.seek(0)
    cur.copy_expert(f"COPY {table_sql} FROM STDIN WITH (FORMAT csv)", buf)


# ------------------------------------------------------------------ our tables


def fill_ours(ctx: Context, study_id: str, rows: list[TrialRow], optuna_ids: dict[int, int] | None) -> None:
    """Turn the study's queued slots into the given trials, and add their intermediate values (COPY)."""
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("""CREATE TEMP TABLE fill_trials (number int, state text, params jsonb, value float8,
                           metrics jsonb, attempts int, failure_reason text, started_at timestamptz,
                           finished_at timestamptz, optuna_trial_id int, examples_seen bigint) ON COMMIT DROP""")
        data = []
        for t in rows:
            metrics = ({"spearman_cosine": t.value, "pearson_cosine": round(t.value - 0.01, 6),
                        "examples_seen": STEPS[-1]} if t.state == "complete" else None)
            data.append((t.number, t.state, json.dumps(t.params), t.value,
                         json.dumps(metrics) if metrics else None, t.attempts, t.failure_reason,
                         t.started_at.isoformat(), t.finished_at.isoformat() if t.finished_at else None,
                         (optuna_ids or {}).get(t.number), STEPS[-1] if t.state != "running" else STEPS[1]))
        _copy(cur, "fill_trials", data)
        cur.execute("""
            UPDATE trials t SET state = f.state, params = f.params, value = f.value, metrics = f.metrics,
                attempts = f.attempts, failure_reason = f.failure_reason, started_at = f.started_at,
                finished_at = f.finished_at, optuna_trial_id = f.optuna_trial_id, examples_seen = f.examples_seen,
                last_eval = f.value,
                rank_key = CASE WHEN f.state = 'complete' THEN -f.value END,  -- the study maximizes
                planned_examples = 1024,
                lease_token = CASE WHEN f.state = 'running' THEN gen_random_uuid() END,
                lease_expires_at = CASE WHEN f.state = 'running' THEN now() + interval '1 day' END,
                eta_seconds = CASE WHEN f.state = 'running' THEN 30 END,
                below_baseline = CASE WHEN f.state = 'complete' THEN false END
            FROM fill_trials f WHERE t.study_id = %s AND t.number = f.number""", (study_id,))
        cur.execute("SELECT number, id FROM trials WHERE study_id = %s", (study_id,))
        ids = dict(cur.fetchall())
        _copy(cur, "intermediate_values (trial_id, examples_seen, value)",
              [(ids[t.number], step, v) for t in rows for step, v in t.intermediate])
        cur.execute("""UPDATE studies SET status = 'running', started_at = %s, baseline_value = 0.8672,
                           baseline_subset_value = 0.8672, updated_at = now() WHERE id = %s""",
                    (rows[0].started_at.isoformat() if rows else None, study_id))
        raw.commit()
        cur.execute("ANALYZE trials; ANALYZE intermediate_values; ANALYZE studies")
        raw.commit()
    finally:
        raw.close()


# ------------------------------------------------------------------ Optuna's tables

_OPTUNA_STATE = {"complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL", "running": "RUNNING"}


def _naive_utc(d: datetime | None) -> str | None:
    return d.astimezone(timezone.utc).replace(tzinfo=None).isoformat() if d else None


def fill_optuna_sql(ctx: Context, optuna_study_name: str, rows: list[TrialRow]) -> tuple[int, dict[int, int]]:
    """COPY the trials into Optuna's tables (trials, trial_params, trial_values, trial_intermediate_values),
    exactly as its RDBStorage would store them. Returns (optuna study_id, {number: optuna trial_id})."""
    dist_json = {k: distribution_to_json(d) for k, d in DISTRIBUTIONS.items()}
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f'SET LOCAL search_path TO "{OPTUNA_SCHEMA}"')  # not SET: the connection goes back to a pool
        cur.execute("SELECT study_id FROM studies WHERE study_name = %s", (optuna_study_name,))
        (sid,) = cur.fetchone()
        _copy(cur, "trials (number, study_id, state, datetime_start, datetime_complete)",
              [(t.number, sid, _OPTUNA_STATE[t.state], _naive_utc(t.started_at), _naive_utc(t.finished_at))
               for t in rows])
        cur.execute("SELECT number, trial_id FROM trials WHERE study_id = %s", (sid,))
        ids = dict(cur.fetchall())
        _copy(cur, "trial_params (trial_id, param_name, param_value, distribution_json)",
              [(ids[t.number], k, DISTRIBUTIONS[k].to_internal_repr(v), dist_json[k])
               for t in rows for k, v in t.params.items()])
        _copy(cur, "trial_values (trial_id, objective, value, value_type)",
              [(ids[t.number], 0, t.value, "FINITE") for t in rows if t.value is not None])
        _copy(cur, "trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)",
              [(ids[t.number], step, v, "FINITE") for t in rows for step, v in t.intermediate])
        cur.execute("ANALYZE trials; ANALYZE trial_params; ANALYZE trial_values; ANALYZE trial_intermediate_values")
        raw.commit()
    finally:
        raw.close()
    return sid, ids


def fill_optuna_add_trials(ctx: Context, optuna_study_name: str, rows: list[TrialRow],
                           batch: int = 500) -> tuple[int, dict[int, int]]:
    """The same through Optuna's public API (`study.add_trials`), for comparison: one transaction per trial."""
    state = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
             "failed": optuna.trial.TrialState.FAIL, "running": optuna.trial.TrialState.RUNNING}
    store = ctx.optuna_storage
    study = optuna.load_study(study_name=optuna_study_name, storage=store)
    for i in range(0, len(rows), batch):
        study.add_trials([
            optuna.trial.create_trial(
                state=state[t.state], value=t.value, params=t.params,
                distributions=DISTRIBUTIONS, intermediate_values=dict(t.intermediate))
            for t in rows[i:i + batch]])
    sid = study._study_id
    with ctx.engine.connect() as conn:
        conn.execute(text(f'SET LOCAL search_path TO "{OPTUNA_SCHEMA}"'))
        ids = dict(conn.execute(text("SELECT number, trial_id FROM trials WHERE study_id = :s"), {"s": sid}).all())
    return sid, ids


# ------------------------------------------------------------------ all of it


@dataclass
class Filled:
    db_name: str
    database_url: str
    settings: Settings
    ctx: Context
    study_id: str
    optuna_study_name: str
    optuna_study_id: int
    token: str
    n_trials: int
    timings: dict[str, float] = field(default_factory=dict)


def create_study_via_api(ctx: Context, token: str, n_trials: int) -> tuple[str, str]:
    """POST /v1/studies on the real app (in-process): creates the Optuna study and our n_trials slots."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    body = json.loads(json.dumps(STUDY_BODY))
    body["budget"]["n_trials"] = n_trials
    with TestClient(create_app(ctx, run_reaper=False)) as client:
        r = client.post("/v1/studies", json=body, headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/studies answered {r.status_code}: {r.text}")
    study_id = r.json()["id"]
    with ctx.engine.connect() as conn:
        oname = conn.execute(text("SELECT optuna_study_name FROM studies WHERE id = :id"), {"id": study_id}).scalar_one()
    return study_id, oname


@contextmanager
def filled_study(n_trials: int = 20_000, optuna_method: str = "sql", seed: int = 0,
                 keep: bool = False, log: Any = print) -> Iterator[Filled]:
    """A fresh database with one filled study; dropped on exit (unless keep)."""
    workdir = Path(tempfile.mkdtemp(prefix="stsweep_bench_"))
    db_name, url = create_database()
    ctx: Context | None = None
    try:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        migrate.upgrade(url)
        settings = make_settings(url, workdir)
        ctx = Context(settings, url)
        ctx.optuna_storage  # noqa: B018  (creates schema optuna and its tables)
        timings["migrate"] = time.perf_counter() - t
        token = create_token(ctx.sessions, "bench")

        t = time.perf_counter()
        study_id, oname = create_study_via_api(ctx, token, n_trials)
        timings["create_study_api"] = time.perf_counter() - t

        rows = generate_trials(n_trials, seed)
        t = time.perf_counter()
        if optuna_method == "sql":
            osid, oids = fill_optuna_sql(ctx, oname, rows)
        elif optuna_method == "add_trials":
            osid, oids = fill_optuna_add_trials(ctx, oname, rows)
        else:
            raise ValueError(f"unknown optuna_method {optuna_method!r}")
        timings[f"fill_optuna_{optuna_method}"] = time.perf_counter() - t

        t = time.perf_counter()
        fill_ours(ctx, study_id, rows, oids)
        timings["fill_ours"] = time.perf_counter() - t
        log(f"filled {db_name}: study {study_id} (optuna study_id {osid}), {n_trials} trials; "
            + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        yield Filled(db_name, url, settings, ctx, study_id, oname, osid, token, n_trials, timings)
    finally:
        if ctx is not None:
            ctx.close()
        optuna_bridge.storage.cache_clear()  # its engine would keep connections to the dropped database
        if keep:
            log(f"kept database {db_name}: {url}")
        else:
            drop_database(db_name)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--optuna-method", choices=["sql", "add_trials"], default="sql")
    ap.add_argument("--keep", action="store_true", help="keep the database (prints its URL) instead of dropping it")
    args = ap.parse_args(argv)
    with filled_study(args.trials, args.optuna_method, keep=args.keep) as f:
        with f.ctx.engine.connect() as conn:
            counts = conn.execute(text("SELECT state, count(*) FROM trials WHERE study_id = :s GROUP BY state "
                                       "ORDER BY state"), {"s": f.study_id}).all()
            points = conn.execute(text("SELECT count(*) FROM intermediate_values")).scalar_one()
            conn.execute(text(f'SET LOCAL search_path TO "{OPTUNA_SCHEMA}"'))
            ocounts = conn.execute(text("SELECT state, count(*) FROM trials WHERE study_id = :s GROUP BY state "
                                        "ORDER BY state"), {"s": f.optuna_study_id}).all()
        print("ours:  ", dict(counts), f"intermediate values {points}")
        print("optuna:", {str(k): v for k, v in ocounts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
