"""A poisoned study on a running deployment: two real worker processes, two studies; one study's row is
poisoned with SQL while both run. The other study completes, the same worker processes stay alive (never
restarted), and the poisoned study is failed with a reason."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.settings import Settings
from service.store.db import session_scope
from tests.pairs import pair_rows, write_jsonl
from tests.test_worker_e2e import row, stop, study_body, submit
from tests.workerproc import start_worker, wait_for

pytestmark = pytest.mark.slow


def test_a_poisoned_study_is_quarantined_and_the_fleet_goes_on(client: TestClient, ctx: Context, settings: Settings,
                                                               data_root: Path, tmp_path: Path) -> None:
    (data_root / "pairs").mkdir()
    write_jsonl(data_root / "pairs" / "train.jsonl", pair_rows("train", 96, seed=1))
    write_jsonl(data_root / "pairs" / "dev.jsonl", pair_rows("dev", 32, seed=2))
    data = {"train": {"path": "pairs/train.jsonl"}, "eval": {"path": "pairs/dev.jsonl"}, "score_range": [0, 5],
            "max_train_samples": 32}
    evaluation = {"every_n_examples": 32, "max_eval_samples": 16}
    budget = {"n_trials": 2, "max_concurrent_trials": 1}
    poisoned = submit(client, study_body("poisoned", data=data, budget={"n_trials": 4, "max_concurrent_trials": 1},
                                         evaluation=evaluation))
    healthy = submit(client, study_body("healthy", data=data, budget=budget, evaluation=evaluation))
    workers = [start_worker(settings, tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: row(ctx, "SELECT count(DISTINCT study_id) FROM trials WHERE state = 'running'")[0] == 2,
                 120, "both studies running")
        with session_scope(ctx.sessions) as s:  # what the issue saw, and a spec that no longer validates
            s.execute(text("UPDATE studies SET timeout_seconds = 1e303, "
                           "spec = jsonb_set(spec, '{sampler,name}', '\"annealing\"') WHERE id = :sid"),
                      {"sid": poisoned})
        wait_for(lambda: client.get(f"/v1/studies/{healthy}").json()["status"] == "completed", 180,
                 "the healthy study to complete")
        assert [w.poll() for w in workers] == [None, None], "no worker ended"
        study = client.get(f"/v1/studies/{poisoned}").json()
        assert study["status"] == "failed", study
        assert study["status_reason"].startswith("quarantined: "), study["status_reason"]
        assert "budget.timeout_seconds" in study["status_reason"] or "sampler.name" in study["status_reason"]
        assert client.get(f"/v1/studies/{healthy}").json()["counts"]["complete"] == 2
        pids = {r[0] for r in _registered(ctx)}
        assert pids == {w.pid for w in workers}, "the same two processes, never restarted"
        for w in workers:
            w.send_signal(signal.SIGTERM)
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
    finally:
        for w in workers:
            stop(w)


def _registered(ctx: Context) -> list[tuple[int]]:
    with session_scope(ctx.sessions) as s:
        return [(int(p),) for p in s.execute(text("SELECT pid FROM workers")).scalars()]
