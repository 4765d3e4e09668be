"""Fill an Optuna study's tables in bulk (COPY), exactly as its RDBStorage stores them: thousands of trials in
well under a second, for tests that need a long history without running it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import FloatDistribution, distribution_to_json

from service.context import Context

DISTRIBUTION = FloatDistribution(0.0, 1.0)


@dataclass(frozen=True)
class Row:
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    x: float
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)


def _copy(cur: Any, table_sql: str, rows: list[tuple[Any, ...]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    cur.copy_expert(f"COPY {table_sql} FROM STDIN WITH (FORMAT csv)", buf)


def fill(ctx: Context, optuna_study_id: int, rows: list[Row]) -> list[int]:
    """Append `rows` as trials of the study (numbers after its last one); returns their trial ids."""
    raw = ctx.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f'SET LOCAL search_path TO "{ctx.settings.optuna_schema}"')
        cur.execute("SELECT count(*) FROM trials WHERE study_id = %s", (optuna_study_id,))
        (first,) = cur.fetchone()
        _copy(cur, "trials (number, study_id, state, datetime_start, datetime_complete)",
              [(first + i, optuna_study_id, r.state, "2026-01-01T00:00:00",
                None if r.state == "RUNNING" else "2026-01-01T00:01:00") for i, r in enumerate(rows)])
        cur.execute("SELECT trial_id FROM trials WHERE study_id = %s AND number >= %s ORDER BY number",
                    (optuna_study_id, first))
        ids = [tid for (tid,) in cur.fetchall()]
        dist = distribution_to_json(DISTRIBUTION)
        _copy(cur, "trial_params (trial_id, param_name, param_value, distribution_json)",
              [(tid, "x", r.x, dist) for tid, r in zip(ids, rows)])
        _copy(cur, "trial_values (trial_id, objective, value, value_type)",
              [(tid, 0, r.value, "FINITE") for tid, r in zip(ids, rows) if r.value is not None])
        _copy(cur, "trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type)",
              [(tid, step, v, "FINITE") for tid, r in zip(ids, rows) for step, v in r.intermediate.items()])
        cur.execute("ANALYZE trials; ANALYZE trial_values")
        raw.commit()
        return ids
    finally:
        raw.close()
