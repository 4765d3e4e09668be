"""`pruner.compare_at: schedule_fraction` with a real worker process (real PostgreSQL, the real model, bundled
pairs): the worker gives every trial's planned examples to Optuna before its first report, so the
schedule-fraction pruner can place each trial on its own schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.settings import Settings
from service.store.db import session_scope
from service.store.fraction_pruner import PLANNED_ATTR
from tests.test_worker_e2e import pair_files, study_body, submit  # noqa: F401  (pair_files: a fixture)
from tests.workerproc import run_until_idle

pytestmark = pytest.mark.slow


def test_worker_sets_planned_examples_for_the_fraction_pruner(client: TestClient, ctx: Context, settings: Settings,
                                                              pair_files: None, tmp_path: Path) -> None:
    body = study_body(
        "fraction", budget={"n_trials": 2, "max_concurrent_trials": 1},
        pruner={"name": "median", "n_startup_trials": 1, "compare_at": "schedule_fraction"},
        search_space={"learning_rate": 3e-5, "per_device_train_batch_size": 32, "max_seq_length": 48,
                      "warmup_ratio": 0.1, "num_train_epochs": {"distribution": "categorical", "choices": [1, 2]}},
        enqueue_trials=[{"num_train_epochs": 1}, {"num_train_epochs": 2}],
    )
    body["data"]["max_train_samples"] = 128
    study_id = submit(client, body)
    run_until_idle(settings, tmp_path / "worker.log", 540)
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "completed", study
    with session_scope(ctx.sessions) as s:
        planned = dict(s.execute(text(
            "SELECT t.number, a.value_json FROM optuna.trial_user_attributes a JOIN optuna.trials t "
            "ON t.trial_id = a.trial_id WHERE a.key = :k ORDER BY t.number"), {"k": PLANNED_ATTR}).all())
        ours = dict(s.execute(text("SELECT number, planned_examples FROM trials WHERE study_id = :s"),
                              {"s": study_id}).all())
    # 128 training pairs (max_train_samples): one epoch plans 128 examples, two plan 256.
    assert sorted(int(v) for v in planned.values()) == [128, 256], planned
    assert sorted(int(v) for v in ours.values()) == [128, 256], ours
