"""Quarantine on real PostgreSQL: whatever a study row holds (written straight into it with SQL, bypassing the
API), claiming, settling, reaping, reconciling, scoring and extending fail that study alone, with a reason, and
go on with the others; a transient fault never quarantines."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.core.spec import StudySpec
from service.core.errors import DatabaseUnavailable
from service.store import quarantine, queue, results, studies
from service.store.db import session_scope
from service.store.reaper import reap_once
from service.store.reconcile import reconcile
from tests.studyspecs import contract_study

# Each poison: (SET clause for the study row, its params, words its reason must hold).
TIMEOUTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "huge": ("timeout_seconds = 1e303", {}, "budget.timeout_seconds"),
    "negative": ("timeout_seconds = -1", {}, "budget.timeout_seconds"),
    "nan": ("timeout_seconds = 'NaN'", {}, "budget.timeout_seconds"),
    "infinity": ("timeout_seconds = 'Infinity'", {}, "budget.timeout_seconds"),
}
SPECS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown sampler": ("spec = jsonb_set(spec, '{sampler,name}', '\"annealing\"')", {}, "sampler.name"),
    "missing field": ("spec = spec - 'task'", {}, "task"),
    "wrong type": ("spec = jsonb_set(spec, '{budget}', '\"ten\"')", {}, "budget"),
    "string for a number": ("spec = jsonb_set(spec, '{evaluation,every_n_examples}', '\"many\"')", {},
                            "evaluation.every_n_examples"),
    "not an object": ("spec = '[1, 2]'", {}, "spec"),
}
COLUMNS: dict[str, tuple[str, dict[str, Any], str]] = {
    "no concurrency": ("max_concurrent_trials = -3", {}, "budget.max_concurrent_trials"),
    "no attempts": ("max_attempts = 0", {}, "max_attempts"),
    "no trials": ("n_trials = -1", {}, "budget.n_trials"),
    "direction": ("direction = 'sideways'", {}, "objective.direction"),
    "infinite start": ("started_at = 'infinity'", {}, "started_at"),
}


def _study(ctx: Context, name: str, **overrides: Any) -> str:
    spec = StudySpec.model_validate(contract_study(
        name=name, budget={"n_trials": 3, "max_concurrent_trials": 1}, **overrides))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {})
    return study_id


def _poison(ctx: Context, study_id: str, poison: tuple[str, dict[str, Any], str]) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text(f"UPDATE studies SET {poison[0]} WHERE id = :sid"), {"sid": study_id, **poison[1]})


def _status(ctx: Context, study_id: str) -> tuple[str, str | None]:
    with session_scope(ctx.sessions) as s:
        row = s.execute(text("SELECT status, status_reason FROM studies WHERE id = :sid"), {"sid": study_id}).one()
    return row.status, row.status_reason


def _assert_quarantined(ctx: Context, study_id: str, operation: str, words: str) -> None:
    status, reason = _status(ctx, study_id)
    assert status == "failed", (status, reason)
    assert reason is not None and reason.startswith(f"quarantined: {operation}: "), reason
    assert words in reason and len(reason) <= 500, reason
    assert not any(ord(c) < 32 for c in reason), reason
    with session_scope(ctx.sessions) as s:
        open_trials = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :sid "
                                     "AND state IN ('queued', 'running')"), {"sid": study_id}).scalar_one()
    assert open_trials == 0, "nothing of a quarantined study stays queued or running"


def _backdate(ctx: Context, trial_id: int) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": trial_id})


@pytest.mark.parametrize("poison", [*TIMEOUTS.values(), *SPECS.values(), COLUMNS["direction"],
                                    COLUMNS["no trials"], COLUMNS["no attempts"]],
                         ids=[*TIMEOUTS, *SPECS, "direction", "no trials", "no attempts"])
def test_a_claim_quarantines_a_poisoned_study_and_claims_the_next(ctx: Context, poison: Any) -> None:
    bad = _study(ctx, "bad")  # the older one: claims reach it first
    good = _study(ctx, "good")
    first = queue.claim(ctx.sessions, None, 30)
    assert first is not None and first[1] == bad, "started, so its timeout is evaluated from now on"
    queue.finish(ctx.sessions, first[0].lease, queue.Finish(state="pruned"), 3)
    _poison(ctx, bad, poison)
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None and got[1] == good
    _assert_quarantined(ctx, bad, "claim", poison[2])
    assert _status(ctx, good)[0] == "running"


@pytest.mark.parametrize("poison", [*TIMEOUTS.values(), *COLUMNS.values()], ids=[*TIMEOUTS, *COLUMNS])
def test_the_reaper_quarantines_a_poisoned_study_and_still_reaps_the_others(ctx: Context, poison: Any) -> None:
    bad = _study(ctx, "bad", max_attempts=2)
    good = _study(ctx, "good", max_attempts=2)
    mine, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    theirs, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    assert (mine.study_id, theirs.study_id) == (bad, good)
    _poison(ctx, bad, poison)
    _backdate(ctx, theirs.lease.trial_id)
    reaped = reap_once(ctx)
    assert [(r.study_id, r.state) for r in reaped] == [(good, "queued")], "the other study's lease is reaped"
    _assert_quarantined(ctx, bad, "reap", poison[2])
    with pytest.raises(Exception, match="lease was lost"):
        queue.heartbeat(ctx.sessions, mine.lease, 30)  # the quarantined study's attempt is over
    again = queue.claim(ctx.sessions, None, 30)
    assert again is not None and again[1] == good and again[0].attempt == 2


def test_settling_a_poisoned_study_quarantines_it_and_keeps_the_result(ctx: Context) -> None:
    bad = _study(ctx, "bad")
    for _ in range(2):  # a finish settles the study only once no slot is queued: its last slot is the one
        claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
        assert queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5), 3) == "running"
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    # Passes every column check, and breaks the settling's SQL (the confirm check reads the seed as a bigint).
    _poison(ctx, bad, ("spec = jsonb_set(spec, '{seed}', '\"x\"')", {}, ""))
    status = queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.8), 3)
    assert status == "failed"
    _assert_quarantined(ctx, bad, "settle", "DataError: invalid input syntax for type bigint")
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT state, value FROM trials WHERE id = :t"),
                         {"t": claim.lease.trial_id}).one() == ("complete", 0.8), "the trial's result is kept"


def test_one_poisoned_spec_no_longer_stops_reconciling_or_test_scoring(ctx: Context) -> None:
    bad = _study(ctx, "bad")
    good = _study(ctx, "good")
    for study_id in (bad, good):
        with session_scope(ctx.sessions) as s:
            s.execute(text("UPDATE studies SET status = 'completed', finished_at = now() WHERE id = :sid"),
                      {"sid": study_id})
            s.execute(text("UPDATE trials SET state = 'complete', value = 0.5, rank_key = -0.5, "
                           "checkpoint_key = 'k', checkpoint_sha256 = 's' WHERE study_id = :sid AND number = 0"),
                      {"sid": study_id})
    # Cast across every study by the reconciler and by the test-split claim: once a cast error for all.
    _poison(ctx, bad, ("spec = jsonb_set(jsonb_set(spec, '{keep_top_k}', '\"all\"'), '{data,split}', "
                       "'{\"test_fraction\": \"half\"}')", {}, ""))
    reconcile(ctx)
    jobs = [results.claim_test_split(ctx.sessions, 30) for _ in range(2)]
    assert {job.study_id for job in jobs if job is not None} == {bad, good}


def test_extend_on_a_poisoned_study_is_a_409_and_fails_it(client: TestClient, ctx: Context) -> None:
    bad = _study(ctx, "bad")
    worse = _study(ctx, "worse")
    _poison(ctx, bad, TIMEOUTS["huge"])
    _poison(ctx, worse, SPECS["unknown sampler"])
    for study_id, words in ((bad, "budget.timeout_seconds"), (worse, "sampler.name")):
        r = client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 2})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["field"] == "study_id" and "quarantined: extend" in r.json()["error"]["message"]
        _assert_quarantined(ctx, study_id, "extend", words)
        again = client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 2})
        assert again.status_code == 409 and again.json()["error"]["field"] == "status"


def test_resume_of_a_poisoned_study_is_a_409_and_reads_never_fail(client: TestClient, ctx: Context) -> None:
    bad = _study(ctx, "bad")
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="pruned"), 3)
    assert client.post(f"/v1/studies/{bad}/pause").status_code == 200
    _poison(ctx, bad, ("spec = jsonb_set(spec, '{seed}', '\"x\"'), timeout_seconds = 'NaN'", {}, ""))
    r = client.post(f"/v1/studies/{bad}/resume")
    assert r.status_code == 409 and r.json()["error"]["field"] == "study_id", r.text
    _assert_quarantined(ctx, bad, "resume", "DataError")
    odd = _study(ctx, "odd")
    _poison(ctx, odd, ("spec = '\"text\"', timeout_seconds = 'Infinity', started_at = 'infinity'", {}, ""))
    for path in (f"/v1/studies/{bad}", f"/v1/studies/{odd}", "/v1/studies"):
        assert client.get(path).status_code == 200, path


def test_a_transient_fault_never_quarantines(ctx: Context) -> None:
    """A lock timeout (the study row held by someone else) is the database's trouble, not the study's: it is
    raised for the caller's retries, and the study stays as it was."""
    study_id = _study(ctx, "busy")
    with session_scope(ctx.sessions) as holder:
        holder.execute(text("SELECT 1 FROM studies WHERE id = :sid FOR UPDATE"), {"sid": study_id})
        with pytest.raises(DatabaseUnavailable):
            with session_scope(ctx.sessions) as s:
                s.execute(text("SET LOCAL lock_timeout = '100ms'"))
                quarantine.isolated(s, study_id, "claim", lambda: s.execute(
                    text("SELECT 1 FROM studies WHERE id = :sid FOR UPDATE"), {"sid": study_id}))
    assert _status(ctx, study_id) == ("queued", None)
