"""The baseline as a job with a lease (service/store/baseline_job.py), on real PostgreSQL: none before a study's
first trial, taken once, recorded only under its token, taken again only once the lease ran out and at most
MAX_BASELINE_ATTEMPTS times; trials that finished before it landed get `below_baseline` when it does."""

from __future__ import annotations

import io
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from service.cli.render import render_study
from service.context import Context
from service.core.schemas import StudyPublic
from service.core.spec import StudySpec
from service.store import baseline_job, queue, studies
from service.store.db import session_scope
from tests.studyspecs import contract_study


def make_study(ctx: Context, n_trials: int = 4) -> str:
    spec = StudySpec.model_validate(contract_study(name="baseline", budget={"n_trials": n_trials,
                                                                            "max_concurrent_trials": 4}))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {})
    return study_id


def finish_trial(ctx: Context, value: float) -> int:
    got = queue.claim(ctx.sessions, None, 600)
    assert got is not None
    claim, _ = got
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 2e-5}, claim.number)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=value, examples_seen=64), 3)
    return claim.number


def study_row(ctx: Context, study_id: str) -> Any:
    with session_scope(ctx.sessions) as s:
        return s.execute(text("SELECT baseline_value, baseline_subset_value, baseline_attempts, "
                              "baseline_recorded_at FROM studies WHERE id = :id"), {"id": study_id}).one()


def below(client: TestClient, study_id: str) -> dict[int, bool | None]:
    items = client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    return {t["number"]: t["below_baseline"] for t in items if t["state"] == "complete"}


def status_text(client: TestClient, study_id: str) -> str:
    """What `stsweep status` prints for the study (its head and progress; no trial table)."""
    from rich.console import Console

    out = io.StringIO()
    Console(width=160, file=out).print(
        render_study(StudyPublic.model_validate(client.get(f"/v1/studies/{study_id}").json()), [], 0))
    return out.getvalue()


def test_one_job_per_study_recorded_under_its_token(client: TestClient, ctx: Context) -> None:
    study_id = make_study(ctx)
    assert baseline_job.claim_baseline(ctx.sessions, 60) is None, "no job before the study's first trial"
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"] is None

    finish_trial(ctx, 0.70)
    finish_trial(ctx, 0.90)
    job = baseline_job.claim_baseline(ctx.sessions, 60, study_id)
    assert job is not None and job.study_id == study_id
    assert baseline_job.claim_baseline(ctx.sessions, 60) is None, "taken: no second worker computes it"
    assert baseline_job.renew_baseline(ctx.sessions, job, 60)
    stranger = baseline_job.BaselineJob(study_id, uuid.uuid4())
    assert not baseline_job.record_baseline(ctx.sessions, stranger, 0.1, 0.1)
    assert below(client, study_id) == {0: None, 1: None}, "unknown until the baseline lands"
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"] == {"value": None, "subset_value": None,
                                                                       "status": "pending"}
    assert "baseline   pending" in status_text(client, study_id)

    assert baseline_job.record_baseline(ctx.sessions, job, 0.80, 0.78)
    assert not baseline_job.record_baseline(ctx.sessions, job, 0.5, 0.5), "recorded once"
    assert not baseline_job.renew_baseline(ctx.sessions, job, 60)
    row = study_row(ctx, study_id)
    assert (row.baseline_value, row.baseline_subset_value, row.baseline_attempts) == (0.80, 0.78, 1)
    assert row.baseline_recorded_at is not None
    # Trials that finished before it are flagged now; one that finishes after, at its finish.
    assert below(client, study_id) == {0: True, 1: False}
    finish_trial(ctx, 0.75)
    assert below(client, study_id) == {0: True, 1: False, 2: True}
    assert baseline_job.claim_baseline(ctx.sessions, 60) is None, "done: no job left"
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"] == {"value": 0.80, "subset_value": 0.78,
                                                                       "status": "ready"}
    assert "baseline   0.8000" in status_text(client, study_id)


def test_a_lapsed_job_is_taken_again_up_to_the_cap(ctx: Context) -> None:
    study_id = make_study(ctx)
    finish_trial(ctx, 0.8)
    first = baseline_job.claim_baseline(ctx.sessions, 0)  # a lease that has run out by the next statement
    assert first is not None
    taken = [first]
    while (job := baseline_job.claim_baseline(ctx.sessions, 0)) is not None:
        taken.append(job)
        assert len(taken) <= baseline_job.MAX_BASELINE_ATTEMPTS
    assert len(taken) == baseline_job.MAX_BASELINE_ATTEMPTS, "a baseline that keeps failing stops being retried"
    assert len({j.token for j in taken}) == len(taken)
    assert not baseline_job.record_baseline(ctx.sessions, first, 0.5, 0.5), "an old token records nothing"
    assert baseline_job.record_baseline(ctx.sessions, taken[-1], 0.5, 0.5)
    assert study_row(ctx, study_id).baseline_attempts == baseline_job.MAX_BASELINE_ATTEMPTS


def test_spent_attempts_say_failed_not_pending(client: TestClient, ctx: Context) -> None:
    study_id = make_study(ctx)
    finish_trial(ctx, 0.8)
    for _ in range(baseline_job.MAX_BASELINE_ATTEMPTS - 1):
        assert baseline_job.claim_baseline(ctx.sessions, 0, study_id) is not None  # each lapses: the worker died
    last = baseline_job.claim_baseline(ctx.sessions, 60, study_id)
    assert last is not None
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"]["status"] == "pending", "the last try runs"
    with session_scope(ctx.sessions) as s:  # ... and its worker dies too: the lease runs out
        s.execute(text("UPDATE studies SET baseline_lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                  {"id": study_id})
    assert baseline_job.claim_baseline(ctx.sessions, 60, study_id) is None
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"] == {"value": None, "subset_value": None,
                                                                       "status": "failed"}
    assert "baseline   failed" in status_text(client, study_id)


def test_paused_and_failed_studies_have_no_baseline_job(client: TestClient, ctx: Context) -> None:
    from service.store import lifecycle

    study_id = make_study(ctx)
    finish_trial(ctx, 0.8)
    lifecycle.change_status(ctx.sessions, study_id, "pause")
    assert baseline_job.claim_baseline(ctx.sessions, 60) is None, "an idle worker leaves a paused study alone"
    assert baseline_job.claim_baseline(ctx.sessions, 60, study_id) is None, "so does the worker of its last trial"
    assert client.get(f"/v1/studies/{study_id}").json()["baseline"]["status"] == "pending"
    lifecycle.change_status(ctx.sessions, study_id, "resume")
    job = baseline_job.claim_baseline(ctx.sessions, 60)
    assert job is not None and job.study_id == study_id

    failed = make_study(ctx)
    with session_scope(ctx.sessions) as s:  # e.g. its data could not be read: the reaper failed it
        s.execute(text("UPDATE studies SET status = 'failed', started_at = now() WHERE id = :id"), {"id": failed})
    assert baseline_job.claim_baseline(ctx.sessions, 60) is None
    assert client.get(f"/v1/studies/{failed}").json()["baseline"]["status"] == "failed"


def test_an_idle_claim_takes_the_oldest_started_study(ctx: Context) -> None:
    waiting = make_study(ctx, 1)
    finish_trial(ctx, 0.8)  # the only slot: the study completes, and still wants its baseline
    later = make_study(ctx, 1)
    assert baseline_job.claim_baseline(ctx.sessions, 60, later) is None, "not started"
    job = baseline_job.claim_baseline(ctx.sessions, 60)
    assert job is not None and job.study_id == waiting
