"""The dashboard's reads, in our own SQL (never Optuna's `get_trials`): what changed since a cursor, the chart
data (downsampled server-side so a 20,000-trial study stays fast) and the workers view.

The cursor is the `seq` that a trigger stamps on every insert and update from one sequence (`change_seq`).
`queue.report` always updates the trial row after inserting a point, so a trial's `seq` is at least that of its
newest point: "trials of this study with seq > cursor" finds every new point through the (study_id, seq) index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.core.errors import NotFound
from service.core.schemas import WorkerPublic
from service.store.trial_rows import TRIAL_COLUMNS, trials_public

CHANGES_LIMIT = 2000  # trials per delta; a bigger backlog comes in several ticks (`more`: true)
HISTORY_MAX_POINTS = 2000  # trial dots on the history chart; every improvement of the best is always kept
CURVES_ALL_UP_TO = 300  # show every trial's curve up to this many, else the best, running and most recent
CURVES_BEST = 200
CURVES_RECENT = 50
CURVES_RUNNING = 100
PARALLEL_MAX = 1000  # most recent complete trials on the parallel-coordinates chart

def _study_row(s: Session, study_id: str) -> Any:
    row = s.execute(text("SELECT id, direction, spec, baseline_value, baseline_subset_value, seq FROM studies "
                         "WHERE id = :id"), {"id": study_id}).first()
    if row is None:
        raise NotFound(f"study {study_id} not found", field="study_id")
    return row


def _cursor(s: Session, study: Any) -> int:
    top = s.execute(text("SELECT max(seq) FROM trials WHERE study_id = :sid"), {"sid": study.id}).scalar()
    return max(int(study.seq), int(top or 0))


def _objective(study: Any) -> dict[str, Any]:
    return {"metric": study.spec.get("objective", {}).get("metric"), "direction": study.direction}


# ------------------------------------------------------------------ live deltas


def changes(factory: sessionmaker[Session], study_id: str, cursor: int) -> dict[str, Any]:
    """Trials written after `cursor` (each with only its points newer than the cursor), whether the study row
    changed, and the new cursor. The caller adds the study summary when `study_changed`."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        rows = s.execute(text(f"SELECT {TRIAL_COLUMNS} FROM trials WHERE study_id = :sid AND seq > :c "
                              "ORDER BY seq LIMIT :limit"),
                         {"sid": study_id, "c": cursor, "limit": CHANGES_LIMIT + 1}).all()
        more = len(rows) > CHANGES_LIMIT
        rows = rows[:CHANGES_LIMIT]
        trials = trials_public(s, rows, since_seq=cursor)
        # With more to come, stop at the last trial returned (rows are in seq order); else everything is seen.
        new_cursor = int(rows[-1].seq) if more else max(cursor, _cursor(s, study))
    return {
        "study_id": study_id,
        "since": cursor,
        "cursor": new_cursor,
        "more": more,
        "study_changed": bool(rows) or int(study.seq) > cursor,
        "trials": [t.model_dump(mode="json") for t in trials],
    }


# ------------------------------------------------------------------ charts


def history(factory: sessionmaker[Session], study_id: str) -> dict[str, Any]:
    """Complete trials' values by trial number (at most about HISTORY_MAX_POINTS: evenly strided, every
    improvement kept) and the best so far (each improvement). PostgreSQL does the windows and builds the lists."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        best = "max" if study.direction == "maximize" else "min"
        keep = "(n <= :cap OR improved OR rn % greatest(1, n / :cap) = 0 OR rn = n)"
        row = s.execute(text(f"""
            WITH c AS (
                SELECT number, value, {best}(value) OVER (ORDER BY number) AS best,
                       row_number() OVER (ORDER BY number) AS rn, count(*) OVER () AS n
                FROM trials WHERE study_id = :sid AND state = 'complete' AND value IS NOT NULL
            ), d AS (
                SELECT *, best IS DISTINCT FROM lag(best) OVER (ORDER BY number) AS improved FROM c
            )
            SELECT coalesce(max(n), 0) AS total,
                   coalesce(json_agg(number ORDER BY number) FILTER (WHERE {keep}), '[]') AS numbers,
                   coalesce(json_agg(value ORDER BY number) FILTER (WHERE {keep}), '[]') AS vals,
                   coalesce(json_agg(number ORDER BY number) FILTER (WHERE improved), '[]') AS best_numbers,
                   coalesce(json_agg(value ORDER BY number) FILTER (WHERE improved), '[]') AS best_values
            FROM d"""), {"sid": study_id, "cap": HISTORY_MAX_POINTS}).one()
        cursor = _cursor(s, study)
    return {
        "objective": _objective(study),
        "baseline": study.baseline_value,
        "trials": {"number": row.numbers, "value": row.vals},
        "best": {"number": row.best_numbers, "value": row.best_values},
        "total": int(row.total),
        "shown": len(row.numbers),
        "sampled": len(row.numbers) < int(row.total),
        "cursor": cursor,
    }


def curves(factory: sessionmaker[Session], study_id: str) -> dict[str, Any]:
    """Each shown trial's intermediate values against examples seen; pruned trials carry `pruned_at`.
    Up to CURVES_ALL_UP_TO started trials: all of them; beyond, the best complete, the running and the most
    recently finished ones (three top-N scans, no full sort)."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        total = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :sid AND state <> 'queued'"),
                          {"sid": study_id}).scalar_one()
        sampled = total > CURVES_ALL_UP_TO
        cols = "id, number, state, value"
        if not sampled:
            sql = f"SELECT {cols} FROM trials WHERE study_id = :sid AND state <> 'queued'"
        else:
            order = "value DESC" if study.direction == "maximize" else "value ASC"
            sql = f"""(SELECT {cols} FROM trials WHERE study_id = :sid AND state = 'complete' AND value IS NOT NULL
                       ORDER BY {order}, number LIMIT :best)
                UNION (SELECT {cols} FROM trials WHERE study_id = :sid AND state = 'running'
                       ORDER BY number DESC LIMIT :running)
                UNION (SELECT {cols} FROM trials WHERE study_id = :sid AND state IN ('complete', 'pruned', 'failed')
                       ORDER BY finished_at DESC NULLS LAST, number DESC LIMIT :recent)"""
        rows = s.execute(text(f"SELECT * FROM ({sql}) AS shown ORDER BY number"),
                         {"sid": study_id, "best": CURVES_BEST, "running": CURVES_RUNNING,
                          "recent": CURVES_RECENT}).all()
        xs: dict[int, list[int]] = {r.id: [] for r in rows}
        ys: dict[int, list[float]] = {r.id: [] for r in rows}
        if rows:
            for p in s.execute(text("SELECT trial_id, examples_seen, value FROM intermediate_values "
                                    "WHERE trial_id = ANY(:ids) ORDER BY trial_id, examples_seen"),
                               {"ids": list(xs)}):
                xs[p.trial_id].append(p.examples_seen)
                ys[p.trial_id].append(p.value)
        cursor = _cursor(s, study)
    shown = [r for r in rows if xs[r.id]]
    return {
        "objective": _objective(study),
        "baseline": study.baseline_subset_value if study.baseline_subset_value is not None
        else study.baseline_value,
        "trials": [{"number": r.number, "state": r.state, "value": r.value, "x": xs[r.id], "y": ys[r.id],
                    "pruned_at": xs[r.id][-1] if r.state == "pruned" else None} for r in shown],
        "total": total,
        "shown": len(shown),
        "sampled": sampled,
        "selection": (f"the {CURVES_BEST} best complete, up to {CURVES_RUNNING} running and the {CURVES_RECENT} "
                      "most recently finished trials" if sampled else "every started trial"),
        "cursor": cursor,
    }


def parallel(factory: sessionmaker[Session], study_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """Complete trials' searched params (columns) and objective value; the most recent PARALLEL_MAX of them.
    PostgreSQL builds the columns (json_agg): no per-row decoding of the params JSON in Python."""
    names = [p["name"] for p in params]
    columns = ", ".join(f"'{i}', json_agg(params -> :p{i} ORDER BY number)" for i in range(len(names)))
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        total = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :sid AND state = 'complete' "
                               "AND value IS NOT NULL"), {"sid": study_id}).scalar_one()
        agg = s.execute(text(f"""
            SELECT coalesce(json_agg(number ORDER BY number), '[]'), coalesce(json_agg(value ORDER BY number), '[]'),
                   json_build_object({columns or "'_', null"})
            FROM (SELECT number, value, params FROM trials WHERE study_id = :sid AND state = 'complete'
                  AND value IS NOT NULL ORDER BY number DESC LIMIT :cap) AS recent"""),
            {"sid": study_id, "cap": PARALLEL_MAX, **{f"p{i}": n for i, n in enumerate(names)}}).one()
        cursor = _cursor(s, study)
    numbers, values, by_index = agg
    return {
        "objective": _objective(study),
        "params": params,
        "trials": {"number": numbers, "value": values,
                   "params": {n: by_index.get(str(i)) or [] for i, n in enumerate(names)}},
        "total": total,
        "shown": len(numbers),
        "sampled": len(numbers) < total,
        "cursor": cursor,
    }


@dataclass(frozen=True)
class CompleteTrials:
    study: Any
    rows: list[Any]  # (params, value) of the `cap` most recent complete trials
    n_complete: int
    version: int  # the newest complete trial's seq: changes whenever the set of complete trials does
    cursor: int


def complete_trials(factory: sessionmaker[Session], study_id: str, cap: int) -> CompleteTrials:
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        n, version = s.execute(text("SELECT count(*), coalesce(max(seq), 0) FROM trials WHERE study_id = :sid "
                                    "AND state = 'complete' AND value IS NOT NULL"), {"sid": study_id}).one()
        rows = s.execute(text("SELECT params, value FROM trials WHERE study_id = :sid AND state = 'complete' "
                              "AND value IS NOT NULL AND params IS NOT NULL ORDER BY number DESC LIMIT :cap"),
                         {"sid": study_id, "cap": cap}).all()
        cursor = _cursor(s, study)
    return CompleteTrials(study, list(rows), int(n), int(version), cursor)


# ------------------------------------------------------------------ workers


def workers(factory: sessionmaker[Session], stale_after_seconds: float,
            project: str | None = None) -> list[WorkerPublic]:
    """Every worker that is not stopped, then the 50 most recently stopped; busy ones say which trial when it
    is one of `project`'s studies (None: any project's)."""
    with session_scope(factory) as s:
        rows = s.execute(text("""
            SELECT w.id, w.host, w.pid, w.device, w.status, w.trials_done, w.started_at, w.last_heartbeat_at,
                   extract(epoch FROM now() - w.last_heartbeat_at) AS age, t.study_id, t.number, t.examples_seen,
                   t.planned_examples, w.scheduler, w.scheduler_job, w.scheduler_task, w.bf16
            FROM workers w LEFT JOIN trials t ON t.id = w.current_trial_id
              AND (CAST(:project AS text) IS NULL
                   OR EXISTS (SELECT 1 FROM studies st WHERE st.id = t.study_id AND st.project = :project))
            WHERE w.status <> 'stopped' OR w.id IN (
                SELECT id FROM workers WHERE status = 'stopped' ORDER BY stopped_at DESC NULLS LAST LIMIT 50)
            ORDER BY w.status = 'stopped', w.host, w.id"""), {"project": project}).all()
    out = []
    for r in rows:
        status = r.status
        if status in ("idle", "busy") and float(r.age) > stale_after_seconds:
            status = "unresponsive"
        current = ({"study_id": r.study_id, "number": r.number, "examples_seen": r.examples_seen,
                    "planned_examples": r.planned_examples} if r.study_id is not None else None)
        out.append(WorkerPublic(id=r.id, host=r.host, pid=r.pid, device=r.device, status=status,
                                current_trial=current, last_heartbeat_at=r.last_heartbeat_at,
                                heartbeat_age_seconds=round(float(r.age), 3), trials_done=r.trials_done,
                                started_at=r.started_at, scheduler=r.scheduler, scheduler_job=r.scheduler_job,
                                scheduler_task=r.scheduler_task, bf16=r.bf16))
    return out
