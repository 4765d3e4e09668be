"""How the worker ends a trained trial (workers/loop.py, in-process on real PostgreSQL, Optuna and the artifact
store; the training itself is not re-run here): an objective of exactly 0.0 is a value, NaN is a failure."""

from __future__ import annotations

import math
from pathlib import Path

import optuna

from service.context import Context
from service.store import optuna_bridge, queue, retention, studies
from tests.faultkit import create_study, one, tiny_study
from workers.contract import TrialOutcome
from workers.hooks import LoopHooks
from workers.loop import WarmStudy, Worker
from workers.sampling import trial_params
from workers.signals import ShutdownSignals


def _conclude(ctx: Context, tmp_path: Path, value: float) -> tuple[str, str]:
    study_id = create_study(ctx, tiny_study(f"ending-{value}", budget={"n_trials": 1, "max_concurrent_trials": 1}))
    worker = Worker(ctx, "cpu", ShutdownSignals(30), scratch=tmp_path / f"scratch-{value}")
    claim, _ = queue.claim(ctx.sessions, worker.worker_id, ctx.settings.lease_seconds)  # type: ignore[misc]
    spec, name, _ = studies.load_spec(ctx.sessions, study_id)
    study = optuna_bridge.load_study(ctx.optuna_storage, name, spec)
    trial, _params = trial_params(ctx.sessions, study, spec, claim, worker.faults.db)
    model = tmp_path / f"model-{value}"
    model.mkdir()
    (model / "config.json").write_text("{}")
    hooks = LoopHooks(ctx, claim.lease, trial, study, retention.attempt_prefix(study_id, 0, claim.lease.token),
                      worker.heartbeat, worker.signals, worker.faults)
    outcome = TrialOutcome(status="complete", examples_seen=128, value=value, metrics={"spearman_cosine": value},
                           best_model_dir=model)
    state = WarmStudy(study_id, spec, study, prepared=None)  # type: ignore[arg-type]
    try:
        ending = worker.conclude(claim, state, trial, outcome, hooks)
    except Exception as exc:  # noqa: BLE001 - what run_trial does with it
        ending = worker.fail(claim, trial, {}, exc, "test")
    return ending, study_id


def test_an_objective_of_exactly_zero_is_a_value(ctx: Context, tmp_path: Path) -> None:
    ending, study_id = _conclude(ctx, tmp_path, 0.0)
    assert ending == "complete"
    row = one(ctx, "SELECT state, value, checkpoint_key, failure_reason FROM trials WHERE study_id = :s", s=study_id)
    assert (row.state, row.value, row.failure_reason) == ("complete", 0.0, None)
    ctx.artifacts.size(row.checkpoint_key)
    name = one(ctx, "SELECT optuna_study_name FROM studies WHERE id = :s", s=study_id).optuna_study_name
    (frozen,) = optuna.load_study(study_name=name, storage=ctx.optuna_storage).trials
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == 0.0


def test_a_nan_objective_is_a_failure(ctx: Context, tmp_path: Path) -> None:
    ending, study_id = _conclude(ctx, tmp_path, math.nan)
    assert ending == "failed"
    row = one(ctx, "SELECT state, failure_reason FROM trials WHERE study_id = :s", s=study_id)
    assert row.state == "failed" and "training diverged" in row.failure_reason
