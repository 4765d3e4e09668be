"""Part (b)'s data for bench/scale.py: many studies of many trials, fast.

Every study is created through the real API code path (`POST /v1/studies`, in-process), so its row, its Optuna
study and its queued slots are exactly what the service writes (and whatever a later revision adds per study,
a counts row or a trigger, is there too). Then the slots are turned into finished trials in a few set-based
statements (no per-row round trips): ~85% complete, ~10% pruned, ~5% failed, 4 params each, one attempt in
their history, 4 intermediate values each (examples_seen 256..1024). The newest `running` studies are running
with `RUNNING_FILLED` running trials (below their cap of 4, so the background claimers find room) and the
last half of their slots queued (a tenth when there is one study: 10,000 of 100,000), so the study the
claimers work on keeps changing while it is read; the others completed, finished over the last ~2 days (half in the last day:
the "recently finished" studies the reconciler reads). Values are deterministic (hashes of the row id).
Optuna's side holds the studies, not the trials' history: the reads measured here never read Optuna, and the
background claimers do not ask it (part (a) measures ask/tell).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from service.context import Context

RUNNING_FILLED = 2  # running trials per running study (cap 4)
CAP = 4


@dataclass(frozen=True)
class Shape:
    study_ids: list[str]  # oldest first
    running_ids: list[str]
    trials_per_study: int
    timings: dict[str, float]


def create_studies(ctx: Context, token: str, n: int, trials: int, log: Callable[[str], None]) -> list[str]:
    from fastapi.testclient import TestClient

    from bench.scale_claims import study_body
    from service.api.app import create_app

    ids = []
    with TestClient(create_app(ctx, run_reaper=False)) as client:
        for i in range(n):
            body = study_body(trials, CAP, f"scale-{i}")
            del body["enqueue_trials"]
            r = client.post("/v1/studies", json=body, headers={"Authorization": f"Bearer {token}"})
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/studies answered {r.status_code}: {r.text[:500]}")
            ids.append(r.json()["id"])
            if (i + 1) % 200 == 0:
                log(f"  {i + 1}/{n} studies created")
    return ids


def _u(salt: str) -> str:
    """A deterministic uniform [0, 1) from the trial's id."""
    return f"((hashtext(t.id::text || '{salt}') & 2147483647) % 100000) / 100000.0"


_PLAN = """
    CREATE TEMP TABLE scale_plan ON COMMIT DROP AS
    SELECT id, row_number() OVER (ORDER BY created_at DESC, id) AS k,
           row_number() OVER (ORDER BY created_at DESC, id) <= :running AS running
    FROM studies
"""

_TRIALS = f"""
    WITH f AS (
        SELECT t.id, t.number, p.k, p.running, {_u('a')} AS u1, {_u('b')} AS u2, {_u('c')} AS u3, {_u('d')} AS u4
        FROM trials t JOIN scale_plan p ON p.id = t.study_id
    ), g AS (
        SELECT f.*, CASE
            WHEN f.running AND f.number >= :done + {RUNNING_FILLED} THEN 'queued'
            WHEN f.running AND f.number >= :done THEN 'running'
            WHEN f.u4 < 0.85 THEN 'complete' WHEN f.u4 < 0.95 THEN 'pruned' ELSE 'failed' END AS st,
            round((0.80 + 0.08 * f.u3)::numeric, 6)::float8 AS v,
            now() - make_interval(mins => (:trials - f.number) + 3 * f.k::int + 5) AS t0
        FROM f
    )
    UPDATE trials t SET
        state = g.st,
        params = jsonb_build_object(
            'learning_rate', exp(ln(1e-6) + g.u1 * ln(100.0)),
            'per_device_train_batch_size', (ARRAY[16, 32, 64])[1 + (g.number % 3)],
            'warmup_ratio', 0.2 * g.u2,
            'loss', (ARRAY['CoSENTLoss', 'CosineSimilarityLoss'])[1 + (g.number % 2)]),
        value = CASE WHEN g.st IN ('complete', 'pruned') THEN g.v END,
        rank_key = CASE WHEN g.st = 'complete' THEN -g.v END,
        metrics = CASE WHEN g.st = 'complete' THEN jsonb_build_object(
            'spearman_cosine', g.v, 'pearson_cosine', g.v - 0.01, 'examples_seen', 1024) END,
        below_baseline = CASE WHEN g.st = 'complete' THEN false END,
        attempts = 1,
        failure_reason = CASE WHEN g.st = 'failed' THEN 'CUDA out of memory' END,
        started_at = g.t0,
        finished_at = CASE WHEN g.st <> 'running' THEN g.t0 + interval '55 seconds' END,
        examples_seen = CASE WHEN g.st = 'running' THEN 512 ELSE 1024 END,
        planned_examples = 1024,
        last_eval = g.v,
        eta_seconds = CASE WHEN g.st = 'running' THEN 30 END,
        lease_token = CASE WHEN g.st = 'running' THEN gen_random_uuid() END,
        lease_expires_at = CASE WHEN g.st = 'running' THEN now() + interval '1 day' END,
        history = CASE WHEN g.st <> 'running' THEN jsonb_build_array(jsonb_build_object(
            'attempt', 0, 'at', g.t0 + interval '55 seconds', 'worker_id', NULL, 'event', g.st, 'fault', NULL,
            'examples_seen', 1024, 'resume_examples', NULL)) ELSE '[]'::jsonb END
    FROM g WHERE t.id = g.id AND g.st <> 'queued'
"""

_POINTS = """
    INSERT INTO intermediate_values (trial_id, examples_seen, value)
    SELECT t.id, s.step, t.last_eval - (1024 - s.step) / 1024.0 * 0.04
    FROM trials t CROSS JOIN (VALUES (256), (512), (768), (1024)) AS s(step)
    WHERE t.state <> 'queued' AND (t.state <> 'running' OR s.step <= 512)
"""

_STUDIES = """
    UPDATE studies st SET
        status = CASE WHEN p.running THEN 'running' ELSE 'completed' END,
        started_at = now() - interval '3 days',
        finished_at = CASE WHEN p.running THEN NULL ELSE now() - make_interval(mins => 3 * p.k::int) END,
        baseline_value = 0.8672, baseline_subset_value = 0.8672, baseline_recorded_at = now() - interval '3 days',
        updated_at = now()
    FROM scale_plan p WHERE p.id = st.id
"""


def fill(ctx: Context, token: str, n_studies: int, trials: int, running: int,
         log: Callable[[str], None]) -> Shape:
    """n_studies x trials, `running` of them running (the newest); the rest completed."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    ids = create_studies(ctx, token, n_studies, trials, log)
    timings["create_studies_api"] = time.perf_counter() - t
    queued = trials // 10 if n_studies == 1 else trials // 2
    done = trials - max(RUNNING_FILLED, queued) - RUNNING_FILLED
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, sql, params in [("plan", _PLAN, {"running": running}),
                                  ("trials", _TRIALS, {"done": done, "trials": trials}),
                                  ("points", _POINTS, {}), ("studies", _STUDIES, {})]:
            t = time.perf_counter()
            cur.execute(_pyformat(sql), params)
            timings[f"fill_{name}"] = time.perf_counter() - t
        raw.commit()
        t = time.perf_counter()
        cur.execute("ANALYZE")
        raw.commit()
        timings["analyze"] = time.perf_counter() - t
    finally:
        raw.close()
    log("  filled: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return Shape(ids, ids[-running:] if running else [], trials, timings)


def _pyformat(sql: str) -> str:
    """`:name` placeholders as psycopg2's `%(name)s` (the raw cursor), `%` escaped."""
    import re

    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql.replace("%", "%%"))


def counts(ctx: Context) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        trials = dict(conn.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all())
        studies = dict(conn.execute(text("SELECT status, count(*) FROM studies GROUP BY status")).all())
    return {"trials": trials, "studies": studies}
