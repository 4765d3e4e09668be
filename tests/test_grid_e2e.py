"""A grid study end to end with a real worker process and real training: every grid point trained once, the
study completes (no `study.stop()` error from Optuna's grid sampler in the last tell), retention keeps the best
`keep_top_k` final checkpoints, the test split is scored, and Optuna agrees with our tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.context import Context
from service.settings import Settings
from service.store import reconcile, retention
from tests.faultkit import create_study, one, tiny_study, trials_of, write_pairs
from tests.workerproc import run_until_idle

pytestmark = pytest.mark.slow


def test_a_grid_study_end_to_end(ctx: Context, settings: Settings, tmp_path: Path) -> None:
    write_pairs(settings.data_root, train=64)  # type: ignore[arg-type]
    body = tiny_study("grid", train=64, sampler={"name": "grid"}, keep_top_k=1,
                      budget={"n_trials": 2, "max_concurrent_trials": 1})
    body["search_space"]["learning_rate"] = {"distribution": "categorical", "choices": [2e-5, 5e-5]}
    body["data"]["test"] = {"path": "pairs/test.jsonl"}
    study_id = create_study(ctx, body)
    run_until_idle(settings, tmp_path / "worker.log", 600)
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log and "Study.stop" not in log, log[-3000:]
    found = trials_of(ctx, study_id)
    assert sorted(t.params["learning_rate"] for t in found) == [2e-5, 5e-5], "each grid point once"
    assert [t.state for t in found] == ["complete", "complete"]
    study = one(ctx, "SELECT status, test_value, test_metric FROM studies WHERE id = :s", s=study_id)
    assert study.status == "completed" and study.test_metric == "spearman_cosine" and 0 < study.test_value <= 1
    kept = [t for t in found if t.checkpoint_key]
    assert len(kept) == 1, "retention kept the best one"
    best = max(found, key=lambda t: t.value)
    assert kept[0].number == best.number
    assert all(t.resume_key is None for t in found)
    assert ctx.artifacts.list_keys(f"{retention.study_prefix(study_id)}trials") == [best.checkpoint_key]
    assert reconcile.disagreements(ctx, study_id) == []
