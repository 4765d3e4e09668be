"""The trial queue on real PostgreSQL with real processes: no duplicate claims, limits held, leases enforced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from service.store import queue, studies
from service.context import Context
from service.store.db import session_scope
from service.core.errors import LeaseLost
from service.store.reaper import reap_once
from service.core.spec import StudySpec
from tests.conftest import ROOT
from tests.studyspecs import contract_study


def _study(ctx: Context, n_trials: int, max_concurrent: int, max_attempts: int = 3, name: str = "s") -> str:
    spec = StudySpec.model_validate(contract_study(
        name=name, budget={"n_trials": n_trials, "max_concurrent_trials": max_concurrent},
        max_attempts=max_attempts))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {})
    return study_id


def test_sixteen_processes_race_without_duplicates(ctx: Context, tmp_path: Path) -> None:
    limits = {_study(ctx, 120, 3, name="a"): 3, _study(ctx, 100, 1, name="b"): 1, _study(ctx, 80, 8, name="c"): 8}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue_racer", ctx.database_url, str(tmp_path / f"{i}.jsonl")],
                              cwd=ROOT) for i in range(16)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    claims = [json.loads(line) for i in range(16) for line in (tmp_path / f"{i}.jsonl").read_text().splitlines()]
    ids = [c["trial_id"] for c in claims]
    assert len(ids) == 300, "every slot claimed once, none lost"
    assert len(set(ids)) == len(ids), "no slot claimed twice"
    assert all(c["attempt"] == 1 for c in claims)
    for c in claims:
        assert c["running_seen"] <= limits[c["study_id"]], c
    writers = {i for i in range(16) if (tmp_path / f"{i}.jsonl").read_text()}
    assert len(writers) > 8, "the claims were spread over the processes"
    with session_scope(ctx.sessions) as s:
        states = dict(s.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all())
        statuses = set(s.execute(text("SELECT status FROM studies")).scalars())
    assert states == {"complete": 300}
    assert statuses == {"completed"}


def test_lost_lease_refuses_old_writes_and_requeues_with_same_params(ctx: Context) -> None:
    study_id = _study(ctx, 1, 1, max_attempts=2)
    first, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    queue.set_params(ctx.sessions, first.lease, {"learning_rate": 3e-5}, 7)
    queue.set_precision(ctx.sessions, first.lease, "fp32")
    assert queue.report(ctx.sessions, first.lease, 256, 0.5).new

    _backdate(ctx, first.lease.trial_id)
    reaped = reap_once(ctx)
    assert [(r.number, r.state) for r in reaped] == [(0, "queued")]

    for write in (lambda: queue.heartbeat(ctx.sessions, first.lease, 30),
                  lambda: queue.report(ctx.sessions, first.lease, 512, 0.6),
                  lambda: queue.progress(ctx.sessions, first.lease, 10, 100, None),
                  lambda: queue.set_precision(ctx.sessions, first.lease, "bf16"),
                  lambda: queue.finish(ctx.sessions, first.lease, queue.Finish(state="complete", value=1.0), 3)):
        with pytest.raises(LeaseLost):
            write()

    second, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    assert second.lease.trial_id == first.lease.trial_id and second.lease.token != first.lease.token
    assert second.attempt == 2
    assert second.params == {"learning_rate": 3e-5} and second.optuna_trial_id == 7
    assert queue.reported_points(ctx.sessions, second.lease.trial_id) == {256}
    again = queue.report(ctx.sessions, second.lease, 256, 0.9)
    assert not again.new and again.value == 0.5, "an old point is not duplicated and keeps its first value"
    assert studies.get_trial(ctx.sessions, study_id, 0).precision == "fp32"  # the last attempt's, until it starts
    queue.set_precision(ctx.sessions, second.lease, "bf16")  # this attempt's worker trains in bf16
    assert studies.get_trial(ctx.sessions, study_id, 0).precision == "bf16"

    _backdate(ctx, second.lease.trial_id)
    assert [(r.state) for r in reap_once(ctx)] == ["failed"]
    with session_scope(ctx.sessions) as s:
        trial = s.execute(text("SELECT state, attempts, failure_reason FROM trials")).one()
        study = s.execute(text("SELECT status, status_reason FROM studies WHERE id = :i"), {"i": study_id}).one()
    assert trial.state == "failed" and trial.attempts == 2
    assert "lease expired" in trial.failure_reason and "no attempts left" in trial.failure_reason
    assert study.status == "failed" and study.status_reason == "no trial completed"


def test_graceful_release_does_not_use_up_an_attempt(ctx: Context) -> None:
    _study(ctx, 1, 1, max_attempts=1)
    first, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    assert queue.release(ctx.sessions, first.lease)
    again, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    assert again.attempt == 1


def test_failures_in_a_row_pause_the_study(ctx: Context) -> None:
    study_id = _study(ctx, 5, 1)
    for _ in range(3):
        claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
        status = queue.finish(ctx.sessions, claim.lease,
                              queue.Finish(state="failed", failure_reason="bad score range"), 3)
    assert status == "paused"
    with session_scope(ctx.sessions) as s:
        reason = s.execute(text("SELECT status_reason FROM studies WHERE id = :i"), {"i": study_id}).scalar_one()
    assert "3 trials failed in a row: bad score range" in reason
    assert queue.claim(ctx.sessions, None, 30) is None


def test_timeout_stops_new_claims_and_completes_the_study(ctx: Context) -> None:
    study_id = _study(ctx, 5, 1)
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5), 3)
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET timeout_seconds = 1, started_at = now() - interval '1 hour'"))
    assert queue.claim(ctx.sessions, None, 30) is None
    reap_once(ctx)
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT status FROM studies WHERE id = :i"), {"i": study_id}).scalar_one() == "completed"
        assert s.execute(text("SELECT count(*) FROM trials")).scalar_one() == 1


def _backdate(ctx: Context, trial_id: int) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": trial_id})
