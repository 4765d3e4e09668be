"""The queue under faults, on real PostgreSQL: claims reach every runnable study, an expired lease writes
nothing, every write can be retried after a lost connection, faults never use up attempts and are written in
the trial's history, and a retried call rides out a real database restart with one log line each way."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.core.errors import LeaseLost
from service.core.spec import StudySpec
from service.store import queue, studies
from service.store.db import make_engine, make_sessionmaker, session_scope, transient_reason
from service.store.retry import GaveUp, Outage, Retry
from tests.faultkit import private_cluster
from tests.studyspecs import contract_study


def _study(ctx: Context, n_trials: int = 1, max_concurrent: int = 1, max_attempts: int = 3) -> str:
    spec = StudySpec.model_validate(contract_study(
        name="q", budget={"n_trials": n_trials, "max_concurrent_trials": max_concurrent}, max_attempts=max_attempts))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {})
    return study_id


def test_claims_reach_a_study_behind_twenty_capped_ones(ctx: Context) -> None:
    capped = [_study(ctx, n_trials=2, max_concurrent=1) for _ in range(20)]
    for _ in capped:  # one running trial each: every one of them is at its cap, with a slot still queued
        assert queue.claim(ctx.sessions, None, 30) is not None
    young = _study(ctx)
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None and got[1] == young, "the younger study was reached"
    assert queue.claim(ctx.sessions, None, 30) is None


def test_an_expired_lease_writes_nothing_even_before_the_reaper_runs(ctx: Context) -> None:
    _study(ctx)
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second'"))
    for write in (lambda: queue.heartbeat(ctx.sessions, claim.lease, 30),
                  lambda: queue.report(ctx.sessions, claim.lease, 32, 0.5),
                  lambda: queue.record_resume_checkpoint(ctx.sessions, claim.lease, "k", "0" * 64, 32),
                  lambda: queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=1.0), 3)):
        with pytest.raises(LeaseLost):
            write()
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT state, value FROM trials")).one() == ("running", None)


def test_a_finish_retried_after_its_commit_is_recognised(ctx: Context) -> None:
    study_id = _study(ctx, n_trials=2, max_concurrent=2)
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    done = queue.Finish(state="complete", value=0.0, checkpoint_key="k/final.tar", checkpoint_sha256="0" * 64)
    assert queue.finish(ctx.sessions, claim.lease, done, 3) == "running"
    # The connection broke before the answer came back; the worker retries the very same write.
    assert queue.finish(ctx.sessions, claim.lease, done, 3) == "running"
    with pytest.raises(LeaseLost):  # anything else under that lease is refused
        queue.finish(ctx.sessions, claim.lease, queue.Finish(state="failed", failure_reason="x"), 3)
    with session_scope(ctx.sessions) as s:
        row = s.execute(text("SELECT state, value, history FROM trials WHERE id = :t"),
                        {"t": claim.lease.trial_id}).one()
    assert row.state == "complete" and row.value == 0.0, "0.0 is a value"
    assert [h["event"] for h in row.history] == ["complete"], "recorded once"
    assert studies.get_study(ctx.sessions, study_id).best.value == 0.0  # type: ignore[union-attr]


def test_a_claim_whose_answer_was_lost_is_taken_back_by_its_worker(ctx: Context) -> None:
    _study(ctx, n_trials=2, max_concurrent=2)
    worker = queue.register_worker(ctx.sessions, "host", 1, "cpu")
    lost, _ = queue.claim(ctx.sessions, worker, 30)  # type: ignore[misc]  # the worker never saw this answer
    again, _ = queue.claim(ctx.sessions, worker, 30)  # type: ignore[misc]
    assert again.lease.trial_id == lost.lease.trial_id and again.attempt == lost.attempt == 1
    assert again.lease.token != lost.lease.token
    with pytest.raises(LeaseLost):
        queue.heartbeat(ctx.sessions, lost.lease, 30)
    queue.heartbeat(ctx.sessions, again.lease, 30)
    other, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    assert other.lease.trial_id != again.lease.trial_id


def test_a_fault_gives_the_trial_back_without_using_an_attempt(ctx: Context, client: TestClient) -> None:
    study_id = _study(ctx, max_attempts=1)
    for i in range(3):
        claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
        assert claim.attempt == 1 and claim.fault_count == i
        assert queue.release(ctx.sessions, claim.lease, "given back", "final checkpoint: disk full (/x)")
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5), 3)
    history = queue.history(ctx.sessions, claim.lease.trial_id)
    assert [(h["attempt"], h["event"], h["fault"]) for h in history] == (
        [(1, "given back", "final checkpoint: disk full (/x)")] * 3 + [(1, "complete", None)])
    # ... and the trials API shows them: why the trial started over, and how far each attempt got.
    (trial,) = client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert trial["fault_count"] == 3 and trial["attempts"] == 1
    assert [(h["attempt"], h["event"], h["fault"]) for h in trial["history"]] == [
        (h["attempt"], h["event"], h["fault"]) for h in history]
    assert all(h["at"] is not None and "examples_seen" in h for h in trial["history"])


def test_transient_faults_are_told_apart_from_real_errors(ctx: Context) -> None:
    engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(Exception) as refused:
            with session_scope(make_sessionmaker(engine)) as s:
                s.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert "unreachable" in (transient_reason(refused.value) or "")
    with pytest.raises(Exception) as integrity:
        with session_scope(ctx.sessions) as s:
            s.execute(text("INSERT INTO studies (id) VALUES (NULL)"))
    assert transient_reason(integrity.value) is None
    assert transient_reason(LeaseLost("x")) is None


def test_a_retried_call_rides_out_a_database_restart(caplog: pytest.LogCaptureFixture) -> None:
    with private_cluster() as cluster:
        engine = make_engine(cluster.url, pool_size=1)
        sessions = make_sessionmaker(engine)
        log = logging.getLogger("stsweep.test-outage")
        retry = Retry(Outage("database", log), transient_reason, base=0.2, cap=1.0)
        worker = retry.call("register", queue.register_worker, sessions, "h", 1, "cpu")
        cluster.stop()
        restart = threading.Timer(3.0, cluster.start)
        restart.start()
        with caplog.at_level(logging.WARNING, logger="stsweep.test-outage"):
            started = time.monotonic()
            for _ in range(3):  # each call waits for the database, none gives up
                retry.call("worker heartbeat", queue.worker_heartbeat, sessions, worker)
        restart.join()
        assert time.monotonic() - started >= 2.5
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2, messages
        assert messages[0].startswith("database unavailable (") and "retrying" in messages[0]
        assert messages[1].startswith("database back after ")
        cluster.stop()
        with pytest.raises(GaveUp):
            retry.call("heartbeat", queue.worker_heartbeat, sessions, worker, deadline=time.monotonic() + 1)
        engine.dispose()
