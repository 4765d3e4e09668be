"""Confirm runs, the winner, extend and warm start at the store and API level (real PostgreSQL, no training):
trials are claimed and finished through the queue as a worker would, with chosen values."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.core.errors import Conflict, InvalidInput
from service.core.spec import MAX_TRIALS
from service.store import checkpoints, lifecycle, queue, results, retention
from service.store.confirm import confirm_seeds
from service.store.db import session_scope
from tests.studyspecs import contract_study

LR = {"distribution": "float", "low": 1e-5, "high": 1e-4, "log": True}


@pytest.fixture(autouse=True)
def stsb_files(data_root: Path) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')


def _submit(client: TestClient, **overrides: Any) -> str:
    fields: dict[str, Any] = {"search_space": {"learning_rate": LR, "per_device_train_batch_size": 16},
                              "budget": {"n_trials": 3, "max_concurrent_trials": 1}, **overrides}
    body = contract_study(**fields)
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _run(ctx: Context, value: float, lr: float | None = None) -> queue.Claim:
    """Claim the next trial and finish it complete with `value` (a search trial gets learning rate `lr`)."""
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None
    claim = got[0]
    if claim.kind == "search":
        assert lr is not None
        queue.set_params(ctx.sessions, claim.lease, {"learning_rate": lr, "per_device_train_batch_size": 16}, 1000)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state="complete", value=value, checkpoint_key=f"studies/{claim.study_id}/trials/{claim.number}/x/final.tar",
        checkpoint_sha256="0" * 64, checkpoint_bytes=1), 3)
    return claim


def _rows(ctx: Context, study_id: str) -> list[Any]:
    with session_scope(ctx.sessions) as s:
        return list(s.execute(text("SELECT number, kind, confirm_of, params, train_seed, state, optuna_trial_id, "
                                   "checkpoint_key FROM trials WHERE study_id = :s ORDER BY number"),
                              {"s": study_id}).all())


def _status(ctx: Context, study_id: str) -> str:
    with session_scope(ctx.sessions) as s:
        return str(s.execute(text("SELECT status FROM studies WHERE id = :s"), {"s": study_id}).scalar_one())


def test_confirm_runs_are_enqueued_once_and_the_winner_is_the_best_mean(client: TestClient, ctx: Context) -> None:
    study_id = _submit(client, confirm={"top_k": 2, "seeds": 2}, keep_top_k=1)
    for value, lr in ((0.80, 1e-5), (0.85, 2e-5), (0.82, 3e-5)):
        _run(ctx, value, lr)
    # The search budget is spent: the two best configurations (#1, #2) get two confirm runs each.
    assert _status(ctx, study_id) == "running"
    rows = _rows(ctx, study_id)
    confirm = [r for r in rows if r.kind == "confirm"]
    assert [(r.number, r.confirm_of, r.state) for r in confirm] == [
        (3, 1, "queued"), (4, 1, "queued"), (5, 2, "queued"), (6, 2, "queued")]
    for r in confirm:
        assert r.params == rows[r.confirm_of].params and r.optuna_trial_id is None
    seeds = [r.train_seed for r in confirm]
    assert seeds[0] != seeds[1] and seeds[:2] == seeds[2:] == confirm_seeds(42, 2), "distinct, paired, derived"
    assert 42 not in seeds
    retention.apply(ctx, study_id, 1)
    assert {r.number for r in _rows(ctx, study_id) if r.checkpoint_key} == {1, 2}, "top max(1, top_k) kept"
    # The completion check again (a resume, the reaper): nothing more.
    with session_scope(ctx.sessions) as s:
        assert lifecycle.settle_study(s, study_id) == "running"
    assert len(_rows(ctx, study_id)) == 7
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["winner"] == {"params": rows[1].params, "mean": 0.85, "std": None, "runs": 1,
                               "trial_numbers": [1]}, "no configuration confirmed yet: the best trial"

    claims = [_run(ctx, v) for v in (0.70, 0.72, 0.83, 0.81)]
    assert [(c.kind, c.train_seed) for c in claims] == [("confirm", s) for s in seeds]
    assert _status(ctx, study_id) == "completed"
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["best"]["trial_number"] == 1, "best stays the best single trial"
    winner = study["winner"]
    assert winner["params"] == rows[2].params and winner["runs"] == 3 and winner["trial_numbers"] == [2, 5, 6]
    assert winner["mean"] == pytest.approx(statistics.mean([0.82, 0.83, 0.81]))
    assert winner["std"] == pytest.approx(statistics.stdev([0.82, 0.83, 0.81]))
    # Its best run is the best checkpoint, the one the test split scores, and retention keeps it (keep_top_k 1).
    assert checkpoints.best_checkpoint(ctx.sessions, study_id).trial_number == 5
    job = results.claim_test_split(ctx.sessions, 30, study_id)
    assert job is not None and job.winner.number == 5
    retention.apply(ctx, study_id, 1)
    kept = {r.number for r in _rows(ctx, study_id) if r.checkpoint_key}
    assert kept == {1, 5}, "the top-1 trial and the best run of each confirmed configuration"
    trials = client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert [(t["kind"], t["confirm_of"]) for t in trials][3:] == [("confirm", 1)] * 2 + [("confirm", 2)] * 2


def test_without_confirm_the_winner_is_the_best_trial_alone(client: TestClient, ctx: Context) -> None:
    study_id = _submit(client)
    for value, lr in ((0.80, 1e-5), (0.85, 1e-5), (0.82, 3e-5)):
        _run(ctx, value, lr)
    assert _status(ctx, study_id) == "completed"
    assert all(r.kind == "search" for r in _rows(ctx, study_id))
    winner = client.get(f"/v1/studies/{study_id}").json()["winner"]
    assert winner["trial_numbers"] == [1] and winner["runs"] == 1 and winner["std"] is None
    assert winner["mean"] == 0.85


def test_extend_runs_a_completed_study_again_and_rescores_a_new_winner(client: TestClient, ctx: Context) -> None:
    study_id = _submit(client, budget={"n_trials": 1, "max_concurrent_trials": 1})
    _run(ctx, 0.80, 1e-5)
    job = results.claim_test_split(ctx.sessions, 30, study_id)
    assert job is not None and results.record_test_value(ctx.sessions, job, "spearman_cosine", 0.70)

    r = client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 2})
    assert r.status_code == 200, r.text
    study = r.json()
    assert study["status"] == "running" and study["finished_at"] is None
    assert study["spec"]["budget"]["n_trials"] == 3 and study["progress"]["n_trials"] == 3
    assert study["test"] == {"metric": "spearman_cosine", "value": 0.70, "trial_number": 0, "rescoring": False}
    assert [(r.number, r.kind, r.state) for r in _rows(ctx, study_id)][1:] == [(1, "search", "queued"),
                                                                                (2, "search", "queued")]
    _run(ctx, 0.90, 2e-5)
    _run(ctx, 0.85, 3e-5)
    assert _status(ctx, study_id) == "completed"
    test = client.get(f"/v1/studies/{study_id}").json()["test"]
    assert test == {"metric": "spearman_cosine", "value": 0.70, "trial_number": 0, "rescoring": True}, \
        "the old score stays, flagged, until the new winner's lands"
    job = results.claim_test_split(ctx.sessions, 30, study_id)
    assert job is not None and job.winner.number == 1
    assert results.record_test_value(ctx.sessions, job, "spearman_cosine", 0.75)
    test = client.get(f"/v1/studies/{study_id}").json()["test"]
    assert test == {"metric": "spearman_cosine", "value": 0.75, "trial_number": 1, "rescoring": False}
    assert results.claim_test_split(ctx.sessions, 30, study_id) is None

    # Extended again, the winner unchanged: no new test score is asked for.
    assert lifecycle.extend(ctx.sessions, study_id, 1, MAX_TRIALS) == "running"
    _run(ctx, 0.10, 4e-5)
    assert _status(ctx, study_id) == "completed"
    assert results.claim_test_split(ctx.sessions, 30, study_id) is None


def test_enqueued_configurations_follow_search_slots_past_confirm_runs(client: TestClient, ctx: Context) -> None:
    from service.store import optuna_bridge, studies

    lrs = [1e-5, 2e-5, 3e-5]
    study_id = _submit(client, confirm={"top_k": 1, "seeds": 2}, budget={"n_trials": 1, "max_concurrent_trials": 1},
                       enqueue_trials=[{"learning_rate": lr} for lr in lrs])
    first = _run(ctx, 0.80, lrs[0])
    assert (first.number, first.search_index) == (0, 0)
    confirm = [_run(ctx, 0.80), _run(ctx, 0.80)]
    assert [(c.number, c.kind, c.search_index) for c in confirm] == [(1, "confirm", None), (2, "confirm", None)]
    assert _status(ctx, study_id) == "completed"

    # Two more search slots: trials 3 and 4 are search slots 1 and 2, so they carry enqueue_trials[1] and [2]
    # (by trial number they would have none: the confirm runs took 1 and 2).
    assert lifecycle.extend(ctx.sessions, study_id, 2, MAX_TRIALS) == "running"
    spec, optuna_name, _ = studies.load_spec(ctx.sessions, study_id)
    study = optuna_bridge.load_study(ctx.optuna_storage, optuna_name, spec)
    for search_index in (1, 2):
        got = queue.claim(ctx.sessions, None, 30)
        assert got is not None
        claim = got[0]
        assert (claim.number, claim.search_index) == (search_index + 2, search_index)
        trial = optuna_bridge.ask_for_slot(study, spec, claim.lease.trial_id, claim.number, claim.lease.token.hex,
                                           claim.search_index)
        params = optuna_bridge.sample_params(trial, spec)
        assert params["learning_rate"] == lrs[search_index]
        queue.set_params(ctx.sessions, claim.lease, params, trial._trial_id)
        queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5), 3)


def test_extend_refuses_what_cannot_be_extended(client: TestClient, ctx: Context) -> None:
    study_id = _submit(client, budget={"n_trials": 1, "max_concurrent_trials": 1})
    for body in ({"n_trials": 0}, {"n_trials": MAX_TRIALS}, {}, {"n_trials": 1, "extra": 1}):
        r = client.post(f"/v1/studies/{study_id}/extend", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] in ("n_trials", "extra"), r.json()
    assert client.post("/v1/studies/st_0123456789abcdef/extend", json={"n_trials": 1}).status_code == 404
    client.post(f"/v1/studies/{study_id}/pause")
    assert client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 1}).json()["status"] == "paused"
    with pytest.raises(InvalidInput) as too_many:
        lifecycle.extend(ctx.sessions, study_id, MAX_TRIALS - 1, MAX_TRIALS)
    assert too_many.value.field == "n_trials"
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET status = 'failed' WHERE id = :s"), {"s": study_id})
    r = client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 1})
    assert r.status_code == 409 and r.json()["error"]["field"] == "status"
    with pytest.raises(Conflict):
        lifecycle.extend(ctx.sessions, study_id, 1, MAX_TRIALS)


def test_warm_start_enqueues_the_old_winner_first_or_names_the_parameter(client: TestClient, ctx: Context) -> None:
    old = _submit(client)
    for value, lr in ((0.80, 1e-5), (0.85, 2e-5), (0.82, 3e-5)):
        _run(ctx, value, lr)
    space = {"learning_rate": LR, "per_device_train_batch_size": {"distribution": "categorical",
                                                                  "choices": [16, 32]}}
    body = contract_study(name="warm", search_space=space, warm_start_from=old,
                          enqueue_trials=[{"learning_rate": 5e-5}])
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    # Only the learning rate was searched by both: the batch size is sampled.
    assert r.json()["spec"]["enqueue_trials"] == [{"learning_rate": 2e-5}, {"learning_rate": 3e-5},
                                                  {"learning_rate": 1e-5}, {"learning_rate": 5e-5}]
    assert r.json()["spec"]["warm_start_from"] == old

    with session_scope(ctx.sessions) as s:
        before = s.execute(text("SELECT count(*) FROM studies")).scalar_one()
    narrow = {**space, "learning_rate": {"distribution": "float", "low": 3e-5, "high": 1e-4, "log": True}}
    for bad, field, words in (
            (contract_study(name="narrow", search_space=narrow, warm_start_from=old), "warm_start_from",
             "search_space.learning_rate"),
            (contract_study(name="gone", warm_start_from="st_0123456789abcdef"), "warm_start_from", "not found"),
            (contract_study(name="other", task="pairs", objective={}, search_space={"learning_rate": LR},
                            data={"train": {"path": "stsb/train.jsonl"}, "eval": {"path": "stsb/dev.jsonl"}},
                            warm_start_from=old), "warm_start_from", "scored_pairs"),
            (contract_study(name="shape", warm_start_from="nope"), "warm_start_from", "")):
        r = client.post("/v1/studies", json=bad)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == field and words in error["message"], error
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT count(*) FROM studies")).scalar_one() == before, "nothing stored"


@pytest.mark.parametrize(("confirm", "field"), [
    ({"top_k": 0, "seeds": 2}, "confirm.top_k"), ({"top_k": 21}, "confirm.top_k"),
    ({"seeds": 0}, "confirm.seeds"), ({"top_k": 1, "rounds": 2}, "confirm.rounds"), ("yes", "confirm")])
def test_confirm_is_checked_at_submission(client: TestClient, confirm: Any, field: str) -> None:
    r = client.post("/v1/studies", json=contract_study(confirm=confirm))
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
