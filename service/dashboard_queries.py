"""The dashboard's reads, in our own SQL (never Optuna's `get_trials`): what changed since a cursor, the chart
data (downsampled server-side so a 20,000-trial study stays fast) and the workers view.

The cursor is the `seq` that a trigger stamps on every insert and update from one sequence (`change_seq`).
`queue.report` always updates the trial row after inserting a point, so a trial's `seq` is at least that of its
newest point: "trials of this study with seq > cursor" finds every new point through the (study_id, seq) index.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.errors import NotFound
from service.schemas import IntermediatePoint, TrialPublic, WorkerPublic

CHANGES_LIMIT = 2000  # trials per delta; a bigger backlog comes in several ticks (`more`: true)
HISTORY_MAX_POINTS = 3000  # trial dots on the history chart; every improvement of the best is always kept
CURVES_ALL_UP_TO = 300  # show every trial's curve up to this many, else the best, running and most recent
CURVES_BEST = 200
CURVES_RECENT = 50
CURVES_RUNNING = 100
PARALLEL_MAX = 5000  # most recent complete trials on the parallel-coordinates chart

_TRIAL_COLUMNS = """id, number, state, params, value, metrics, attempts, failure_reason, below_baseline,
    examples_seen, planned_examples, last_eval, eta_seconds, worker_id, checkpoint_key IS NOT NULL AS has_ckpt,
    started_at, finished_at, extract(epoch FROM (coalesce(finished_at, now()) - started_at)) AS duration, seq"""


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
        rows = s.execute(text(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study_id = :sid AND seq > :c "
                              "ORDER BY seq LIMIT :limit"),
                         {"sid": study_id, "c": cursor, "limit": CHANGES_LIMIT + 1}).all()
        more = len(rows) > CHANGES_LIMIT
        rows = rows[:CHANGES_LIMIT]
        points: dict[int, list[IntermediatePoint]] = {r.id: [] for r in rows}
        if rows:
            for p in s.execute(text("SELECT trial_id, examples_seen, value FROM intermediate_values "
                                    "WHERE trial_id = ANY(:ids) AND seq > :c ORDER BY trial_id, examples_seen"),
                               {"ids": list(points), "c": cursor}):
                points[p.trial_id].append(IntermediatePoint(examples_seen=p.examples_seen, value=p.value))
        new_cursor = max([cursor, int(study.seq), *(int(r.seq) for r in rows)])
        if not more:
            new_cursor = max(new_cursor, _cursor(s, study))
    return {
        "study_id": study_id,
        "since": cursor,
        "cursor": new_cursor,
        "more": more,
        "study_changed": bool(rows) or int(study.seq) > cursor,
        "trials": [_trial(r, points[r.id]).model_dump(mode="json") for r in rows],
    }


def _trial(r: Any, points: list[IntermediatePoint]) -> TrialPublic:
    return TrialPublic(
        number=r.number, state=r.state, params=r.params, value=r.value, metrics=r.metrics, attempts=r.attempts,
        failure_reason=r.failure_reason, below_baseline=r.below_baseline, examples_seen=r.examples_seen,
        planned_examples=r.planned_examples, last_eval=r.last_eval, eta_seconds=r.eta_seconds,
        worker_id=r.worker_id, has_checkpoint=r.has_ckpt, started_at=r.started_at, finished_at=r.finished_at,
        duration_seconds=float(r.duration) if r.duration is not None else None, intermediate=points,
    )


# ------------------------------------------------------------------ charts


def history(factory: sessionmaker[Session], study_id: str) -> dict[str, Any]:
    """Complete trials' values by trial number, and the best so far (a step line through each improvement)."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        rows = s.execute(text("SELECT number, value FROM trials WHERE study_id = :sid AND state = 'complete' "
                              "AND value IS NOT NULL ORDER BY number"), {"sid": study_id}).all()
        cursor = _cursor(s, study)
    maximize = study.direction == "maximize"
    best: float | None = None
    improved: list[int] = []
    best_number: list[int] = []
    best_value: list[float] = []
    for i, (number, value) in enumerate(rows):
        if best is None or (value > best if maximize else value < best):
            best = value
            improved.append(i)
            best_number.append(number)
            best_value.append(value)
    keep = _downsample(len(rows), HISTORY_MAX_POINTS, set(improved))
    return {
        "objective": _objective(study),
        "baseline": study.baseline_value,
        "trials": {"number": [rows[i][0] for i in keep], "value": [rows[i][1] for i in keep]},
        "best": {"number": best_number, "value": best_value},
        "total": len(rows),
        "shown": len(keep),
        "sampled": len(keep) < len(rows),
        "cursor": cursor,
    }


def _downsample(n: int, cap: int, always: set[int]) -> list[int]:
    if n <= cap:
        return list(range(n))
    stride = max(1, n // max(1, cap - len(always)))
    return sorted(always | set(range(0, n, stride)) | {n - 1})


def curves(factory: sessionmaker[Session], study_id: str) -> dict[str, Any]:
    """Each shown trial's intermediate values against examples seen; pruned trials carry `pruned_at`."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        order = "value DESC" if study.direction == "maximize" else "value ASC"
        rows = s.execute(text(f"""
            WITH cand AS (
                SELECT id, number, state, value, coalesce(finished_at, started_at) AS recent FROM trials t
                WHERE study_id = :sid AND EXISTS (SELECT 1 FROM intermediate_values iv WHERE iv.trial_id = t.id)
            ), ranked AS (
                SELECT *, count(*) OVER () AS total,
                       row_number() OVER (PARTITION BY state = 'complete' AND value IS NOT NULL
                                          ORDER BY {order} NULLS LAST, number) AS best_rank,
                       row_number() OVER (PARTITION BY state = 'running' ORDER BY number DESC) AS running_rank,
                       row_number() OVER (ORDER BY recent DESC NULLS LAST, number DESC) AS recent_rank
                FROM cand
            )
            SELECT id, number, state, value, total FROM ranked
            WHERE total <= :all_up_to
               OR (state = 'complete' AND value IS NOT NULL AND best_rank <= :best)
               OR (state = 'running' AND running_rank <= :running)
               OR recent_rank <= :recent
            ORDER BY number"""),
            {"sid": study_id, "all_up_to": CURVES_ALL_UP_TO, "best": CURVES_BEST, "running": CURVES_RUNNING,
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
    total = int(rows[0].total) if rows else 0
    sampled = total > CURVES_ALL_UP_TO
    return {
        "objective": _objective(study),
        "baseline": study.baseline_subset_value if study.baseline_subset_value is not None
        else study.baseline_value,
        "trials": [{"number": r.number, "state": r.state, "value": r.value, "x": xs[r.id], "y": ys[r.id],
                    "pruned_at": xs[r.id][-1] if r.state == "pruned" and xs[r.id] else None} for r in rows],
        "total": total,
        "shown": len(rows),
        "sampled": sampled,
        "selection": (f"the {CURVES_BEST} best complete, up to {CURVES_RUNNING} running and the {CURVES_RECENT} "
                      "most recently finished trials" if sampled else "every trial with intermediate values"),
        "cursor": cursor,
    }


def parallel(factory: sessionmaker[Session], study_id: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """Complete trials' searched params (columns) and objective value; the most recent PARALLEL_MAX of them."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        total = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :sid AND state = 'complete' "
                               "AND value IS NOT NULL"), {"sid": study_id}).scalar_one()
        rows = s.execute(text("SELECT number, value, params FROM trials WHERE study_id = :sid "
                              "AND state = 'complete' AND value IS NOT NULL ORDER BY number DESC LIMIT :cap"),
                         {"sid": study_id, "cap": PARALLEL_MAX}).all()
        cursor = _cursor(s, study)
    rows = rows[::-1]
    names = [p["name"] for p in params]
    return {
        "objective": _objective(study),
        "params": params,
        "trials": {"number": [r.number for r in rows], "value": [r.value for r in rows],
                   "params": {n: [(r.params or {}).get(n) for r in rows] for n in names}},
        "total": total,
        "shown": len(rows),
        "sampled": len(rows) < total,
        "cursor": cursor,
    }


def complete_params(factory: sessionmaker[Session], study_id: str, cap: int) -> tuple[Any, list[Any], int, int]:
    """(study row, the `cap` most recent complete trials' (params, value), how many complete, cursor)."""
    with session_scope(factory) as s:
        study = _study_row(s, study_id)
        stats = s.execute(text("SELECT count(*), coalesce(max(seq), 0) FROM trials WHERE study_id = :sid "
                               "AND state = 'complete' AND value IS NOT NULL"), {"sid": study_id}).one()
        rows = s.execute(text("SELECT params, value FROM trials WHERE study_id = :sid AND state = 'complete' "
                              "AND value IS NOT NULL AND params IS NOT NULL ORDER BY number DESC LIMIT :cap"),
                         {"sid": study_id, "cap": cap}).all()
        cursor = _cursor(s, study)
    return study, rows, int(stats[0]), cursor if cursor else int(stats[1])


# ------------------------------------------------------------------ workers


def workers(factory: sessionmaker[Session], stale_after_seconds: float) -> list[WorkerPublic]:
    """Every worker that is not stopped, then the 50 most recently stopped; busy ones say which trial."""
    with session_scope(factory) as s:
        rows = s.execute(text("""
            SELECT w.id, w.host, w.pid, w.device, w.status, w.trials_done, w.started_at, w.last_heartbeat_at,
                   extract(epoch FROM now() - w.last_heartbeat_at) AS age, t.study_id, t.number, t.examples_seen,
                   t.planned_examples
            FROM workers w LEFT JOIN trials t ON t.id = w.current_trial_id
            WHERE w.status <> 'stopped' OR w.id IN (
                SELECT id FROM workers WHERE status = 'stopped' ORDER BY stopped_at DESC NULLS LAST LIMIT 50)
            ORDER BY w.status = 'stopped', w.host, w.id""")).all()
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
                                started_at=r.started_at))
    return out
