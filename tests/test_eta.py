"""The study ETA (service/store/eta.py) from trial rows made through the real queue on real PostgreSQL: pruning
shortens it against the naive `elapsed * (1 - fraction) / fraction`, the study's timeout caps it (and says so),
and before any trial finished the running trials' own ETAs stand in."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.cli.render import eta_text
from service.context import Context
from service.core.schemas import Progress
from service.core.spec import StudySpec
from service.store import queue, studies
from service.store.db import session_scope
from tests.studyspecs import contract_study

PLANNED = 1024
ELAPSED = 1000.0


def make_study(ctx: Context, n_trials: int) -> str:
    spec = StudySpec.model_validate(contract_study(name="eta", budget={"n_trials": n_trials,
                                                                       "max_concurrent_trials": 4}))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {})
    return study_id


def start(ctx: Context, seen: int, eta: float | None) -> queue.Lease:
    got = queue.claim(ctx.sessions, None, 600)
    assert got is not None
    claim, _ = got
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 2e-5 * (1 + claim.number)}, claim.number)
    queue.progress(ctx.sessions, claim.lease, seen, PLANNED, eta)
    return claim.lease


def finish(ctx: Context, state: str, seen: int, value: float | None) -> None:
    lease = start(ctx, seen, 1.0)
    queue.finish(ctx.sessions, lease, queue.Finish(state=state, value=value, examples_seen=seen), 3)


def set_clock(ctx: Context, study_id: str, timeout_seconds: float | None = None) -> None:
    """The study started ELAPSED seconds ago (crafted: the trials above ran in milliseconds)."""
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET started_at = now() - make_interval(secs => :e), timeout_seconds = :t "
                       "WHERE id = :id"), {"id": study_id, "e": ELAPSED, "t": timeout_seconds})


def progress(client: TestClient, study_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/studies/{study_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["progress"])


@pytest.fixture
def pruned_study(ctx: Context) -> str:
    """10 slots: one trial completed its plan, three were pruned at 128 of 1,024 planned examples, one runs
    (256 seen, its own ETA 30 s), five are queued."""
    study_id = make_study(ctx, 10)
    finish(ctx, "complete", PLANNED, 0.85)
    for _ in range(3):
        finish(ctx, "pruned", 128, 0.5)
    start(ctx, 256, 30.0)
    return study_id


def test_pruning_shortens_the_eta(client: TestClient, ctx: Context, pruned_study: str) -> None:
    set_clock(ctx, pruned_study)
    p = progress(client, pruned_study)
    assert p["trials_finished"] == 4 and p["n_trials"] == 10
    naive = ELAPSED * (1 - p["fraction"]) / p["fraction"]  # what the ETA was before: every trial trains its plan
    # Remaining examples: 5 queued slots x the finished trials' mean (1,408 / 4 = 352), and the running trial's
    # plan discounted by the observed ratio (1,408 / 4,096) less what it has seen (352 - 256 = 96) = 1,856;
    # throughput: every example trained (1,408 + 256) over the elapsed 1,000 s.
    expected = (5 * 352 + 96) / ((1408 + 256) / ELAPSED)
    assert p["eta_seconds"] == pytest.approx(expected, rel=0.01)
    assert p["eta_bound"] == "trials"
    assert p["eta_seconds"] < 0.9 * naive, (p["eta_seconds"], naive)


def test_a_study_without_pruning_keeps_the_naive_eta(client: TestClient, ctx: Context) -> None:
    """Every trial trains its plan: the examples-based ETA agrees with the trial-fraction one."""
    study_id = make_study(ctx, 4)
    finish(ctx, "complete", PLANNED, 0.8)
    finish(ctx, "complete", PLANNED, 0.81)
    set_clock(ctx, study_id)
    p = progress(client, study_id)
    assert p["eta_seconds"] == pytest.approx(ELAPSED * (1 - p["fraction"]) / p["fraction"], rel=0.01)


def test_the_timeout_caps_the_eta_and_says_so(client: TestClient, ctx: Context, pruned_study: str) -> None:
    set_clock(ctx, pruned_study, timeout_seconds=5000)  # far: the trials bound it
    far = progress(client, pruned_study)
    assert far["eta_bound"] == "trials" and far["eta_seconds"] > 600

    set_clock(ctx, pruned_study, timeout_seconds=ELAPSED + 200)  # 200 s left: fewer than the trials need
    near = progress(client, pruned_study)
    assert near["eta_bound"] == "timeout"
    assert near["eta_seconds"] == pytest.approx(200, abs=5)
    assert eta_text(Progress.model_validate(near)).endswith("(timeout)")
    assert "(timeout)" not in eta_text(Progress.model_validate(far))

    # Past the timeout no trial starts; the running one still finishes: its own ETA is what is left.
    set_clock(ctx, pruned_study, timeout_seconds=ELAPSED - 10)
    past = progress(client, pruned_study)
    assert past["eta_bound"] == "timeout" and past["eta_seconds"] == pytest.approx(30.0)


def test_before_any_trial_finished_the_running_etas_stand_in(client: TestClient, ctx: Context) -> None:
    study_id = make_study(ctx, 2)
    start(ctx, 256, 30.0)  # 768 examples left in 30 s: 25.6 examples/s
    set_clock(ctx, study_id)
    p = progress(client, study_id)
    # Its remaining 768 examples and the queued slot's 1,024 (the running plan), at 25.6 examples/s.
    assert p["eta_seconds"] == pytest.approx((768 + 1024) / 25.6, rel=0.01)
    assert p["eta_bound"] == "trials"


def test_a_study_not_started_or_ended_has_no_eta(client: TestClient, ctx: Context) -> None:
    study_id = make_study(ctx, 1)
    p = progress(client, study_id)
    assert p["eta_seconds"] is None and p["eta_bound"] is None
    finish(ctx, "complete", PLANNED, 0.8)  # the only slot: the study completes
    done = progress(client, study_id)
    assert done["eta_seconds"] is None and done["eta_bound"] is None and done["fraction"] == 1.0
