"""A trial row as the public `TrialPublic`: the one column list and the one builder, for study pages and the
dashboard's live deltas alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.core.schemas import AttemptEnd, IntermediatePoint, TrialPublic

TRIAL_COLUMNS = """id, number, state, params, value, metrics, attempts, failure_reason, below_baseline,
    examples_seen, planned_examples, last_eval, eta_seconds, worker_id, checkpoint_key IS NOT NULL AS has_ckpt,
    started_at, finished_at, extract(epoch FROM (coalesce(finished_at, now()) - started_at)) AS duration, seq,
    kind, confirm_of, train_seed, fault_count, history, precision"""


def trials_public(s: Session, rows: list[Any], since_seq: int | None = None) -> list[TrialPublic]:
    """`rows` (selected with TRIAL_COLUMNS) with their intermediate points (only those written after
    `since_seq` when given), in one query."""
    points: dict[int, list[IntermediatePoint]] = {r.id: [] for r in rows}
    if rows:
        newer = "" if since_seq is None else " AND seq > :c"
        for p in s.execute(text("SELECT trial_id, examples_seen, value FROM intermediate_values "
                                f"WHERE trial_id = ANY(:ids){newer} ORDER BY trial_id, examples_seen"),
                           {"ids": list(points), "c": since_seq}):
            points[p.trial_id].append(IntermediatePoint(examples_seen=p.examples_seen, value=p.value))
    return [TrialPublic(
        number=r.number, state=r.state, params=r.params, value=r.value, metrics=r.metrics, attempts=r.attempts,
        failure_reason=r.failure_reason, below_baseline=r.below_baseline, examples_seen=r.examples_seen,
        planned_examples=r.planned_examples, last_eval=r.last_eval, eta_seconds=r.eta_seconds,
        worker_id=r.worker_id, has_checkpoint=r.has_ckpt, started_at=r.started_at, finished_at=r.finished_at,
        duration_seconds=float(r.duration) if r.duration is not None else None, intermediate=points[r.id],
        kind=r.kind, confirm_of=r.confirm_of, train_seed=r.train_seed, fault_count=r.fault_count,
        history=[AttemptEnd.model_validate(h) for h in r.history or []], precision=r.precision,
    ) for r in rows]
