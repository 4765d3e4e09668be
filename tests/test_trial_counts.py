"""trial_counts (kept by triggers on trials) always equals a GROUP BY over the trials: after a random sequence of
real queue operations, and after racing worker processes; and the reads built on it say the same."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.context import Context
from service.core.spec import StudySpec
from service.store import lifecycle, metrics_reads, queue, studies
from service.store.db import session_scope
from service.store.trial_counts import SUMS
from tests.conftest import ROOT
from tests.studyspecs import contract_study

# The same numbers, straight from the trials (written here independently of the migration's trigger SQL).
_GROUP_BY = text("""
    SELECT t.study_id, t.state, t.kind, count(*) AS trials, sum(t.attempts) AS attempts,
           coalesce(sum(t.examples_seen) FILTER (WHERE t.state <> 'running'), 0) AS examples,
           coalesce(sum(t.examples_seen) FILTER (WHERE t.state <> 'running' AND t.planned_examples > 0), 0)
               AS seen_of_planned,
           coalesce(sum(t.planned_examples) FILTER (WHERE t.state <> 'running' AND t.planned_examples > 0), 0)
               AS planned,
           coalesce(sum(t.checkpoint_bytes) FILTER (WHERE t.state <> 'running'), 0) AS checkpoint_bytes,
           coalesce(sum((SELECT count(*) FROM jsonb_array_elements(t.history) h
                         WHERE h->>'event' = 'lease expired')), 0) AS reaps,
           coalesce(sum((SELECT count(*) FROM jsonb_array_elements(t.history) h
                         WHERE h->>'event' LIKE 'given back%' AND h->>'fault' IS NULL)), 0) AS given_back,
           coalesce(sum((SELECT count(*) FROM jsonb_array_elements(t.history) h
                         WHERE h->>'event' LIKE 'given back%' AND h->>'fault' IS NOT NULL)), 0) AS given_back_fault
    FROM trials t GROUP BY t.study_id, t.state, t.kind
""")
_SUMMED = text(f"""
    SELECT study_id, state, kind, {', '.join(f'sum({c}) AS {c}' for c in SUMS)}
    FROM trial_counts GROUP BY study_id, state, kind
""")


def _table(rows: Any) -> dict[tuple[str, str, str], tuple[int, ...]]:
    out = {}
    for r in rows:
        values = tuple(int(getattr(r, c)) for c in SUMS)
        if any(values):
            out[(r.study_id, r.state, r.kind)] = values
    return out


def assert_counts_exact(ctx: Context) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        truth = _table(s.execute(_GROUP_BY).all())
        kept = _table(s.execute(_SUMMED).all())
    assert kept == truth


def _study(ctx: Context, n_trials: int, max_concurrent: int, name: str, **extra: Any) -> str:
    spec = StudySpec.model_validate(contract_study(
        name=name, budget={"n_trials": n_trials, "max_concurrent_trials": max_concurrent}, max_attempts=2, **extra))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {})
    return study_id


def _expire(ctx: Context, trial_id: int) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": trial_id})


def test_counts_stay_exact_through_random_queue_operations(ctx: Context) -> None:
    rng = random.Random(19)
    ids = [_study(ctx, 30, 4, "a"), _study(ctx, 20, 2, "b"), _study(ctx, 12, 3, "c")]
    assert_counts_exact(ctx)
    held: list[queue.Claim] = []
    ops = ["claim", "claim", "finish", "finish", "release", "fault", "progress", "reap", "extend", "stop",
           "resume", "note"]
    for step in range(160):
        op = rng.choice(ops)
        if op == "claim":
            got = queue.claim(ctx.sessions, None, 30)
            if got is not None:
                held.append(got[0])
        elif op in ("finish", "release", "fault", "progress", "reap", "note") and held:
            claim = held.pop(rng.randrange(len(held)))
            lease = claim.lease
            try:
                if op == "finish":
                    state = rng.choice(["complete", "complete", "pruned", "failed"])
                    queue.finish(ctx.sessions, lease, queue.Finish(
                        state=state, value=rng.random() if state != "failed" else None,
                        failure_reason="boom" if state == "failed" else None,
                        checkpoint_key=f"k{step}" if state == "complete" else None,
                        checkpoint_sha256="0" * 64 if state == "complete" else None,
                        checkpoint_bytes=rng.randrange(1, 10**6) if state == "complete" else None,
                        examples_seen=rng.randrange(0, 5000)), 50)
                elif op in ("release", "fault"):
                    queue.release(ctx.sessions, lease, fault="disk full" if op == "fault" else None)
                elif op == "progress":
                    queue.progress(ctx.sessions, lease, rng.randrange(1, 4000), 4096, 3.0)
                    held.append(claim)
                elif op == "note":
                    queue.note(ctx.sessions, lease.trial_id, claim.attempt, None, "given back (note)", None)
                    held.append(claim)
                else:
                    queue.progress(ctx.sessions, lease, rng.randrange(1, 4000), 4096, 3.0)
                    _expire(ctx, lease.trial_id)
                    assert queue.reap_expired(ctx.sessions)
            except Exception as exc:  # a lease a stop, settle or reap took away: its writes are refused
                assert type(exc).__name__ == "LeaseLost", exc
        elif op == "extend":
            try:
                lifecycle.extend(ctx.sessions, rng.choice(ids), rng.randrange(1, 6), 1000)
            except Exception as exc:  # a failed study cannot be extended
                assert type(exc).__name__ == "Conflict", exc
        elif op in ("stop", "resume"):
            try:
                lifecycle.change_status(ctx.sessions, rng.choice(ids), op)  # type: ignore[arg-type]
            except Exception as exc:
                assert type(exc).__name__ == "Conflict", exc
        if step % 10 == 0:
            assert_counts_exact(ctx)
    assert_counts_exact(ctx)
    totals = metrics_reads.snapshot(ctx.sessions, 30)
    assert totals.reaps > 0 and totals.give_backs["requested"] > 0 and totals.give_backs["fault"] > 0
    # The reads built on the counts agree with the trials.
    with session_scope(ctx.sessions) as s:
        by_study = {(r.study_id, r.state): int(r.n) for r in s.execute(
            text("SELECT study_id, state, count(*) AS n FROM trials GROUP BY study_id, state"))}
    for sid in ids:
        summary = studies.get_study(ctx.sessions, sid)
        assert {k: v for k, v in summary.counts.items() if v} == {st: n for (i, st), n in by_study.items() if i == sid}
        page = studies.list_trials(ctx.sessions, sid, 0, 5, None)
        assert page.total == sum(n for (i, _), n in by_study.items() if i == sid)
    snap = metrics_reads.snapshot(ctx.sessions, 30)
    assert sum(snap.trials_by_state.values()) == sum(by_study.values())
    # A deleted study takes its counts along; nothing is left behind for it.
    studies.delete_study(ctx.sessions, ids[0])
    assert_counts_exact(ctx)
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT count(*) FROM trial_counts WHERE study_id = :s"), {"s": ids[0]}).scalar() == 0


def test_counts_stay_exact_under_racing_worker_processes(ctx: Context, tmp_path: Path) -> None:
    ids = [_study(ctx, 40, 4, "a"), _study(ctx, 30, 2, "b")]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue_racer", ctx.database_url,
                               str(tmp_path / f"{i}.jsonl")], cwd=ROOT) for i in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    assert_counts_exact(ctx)
    with session_scope(ctx.sessions) as s:
        rows = s.execute(text("SELECT count(*) FROM trial_counts")).scalar_one()
    # 70 claims and 70 finishes wrote at least 280 delta rows; compaction folded most of them.
    assert rows < 140, rows
    for sid, n in zip(ids, (40, 30)):
        summary = studies.get_study(ctx.sessions, sid)
        assert summary.counts["complete"] == n and summary.status == "completed"
