"""The baseline off the critical path, with real worker processes, the real model and the bundled pairs: a lone
worker trains trial 0, then computes the baseline, then trains trial 1; two workers on one study compute it
once. Trials that finished before it landed are flagged against it when it does."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.settings import Settings
from service.store.db import session_scope
from tests.pairs import pair_rows, write_jsonl
from tests.test_worker_e2e import study_body, submit
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow

QUICK = {"checkpoint_every_seconds": 3600}  # no resumable checkpoints: nothing here resumes


@pytest.fixture
def pairs(data_root: Path) -> None:
    (data_root / "pairs").mkdir()
    write_jsonl(data_root / "pairs" / "train.jsonl", pair_rows("train", 192, seed=1))
    write_jsonl(data_root / "pairs" / "dev.jsonl", pair_rows("dev", 96, seed=2))


def body(name: str, max_concurrent: int) -> dict[str, Any]:
    b = study_body(name, budget={"n_trials": 2, "max_concurrent_trials": max_concurrent})
    del b["data"]["test"]  # no test-split job: the baseline is the only study job here
    b["data"]["max_train_samples"] = 128
    return b


def wait_all(workers: list[subprocess.Popen[bytes]], logs: list[Path]) -> str:
    try:
        for w, log in zip(workers, logs):
            assert w.wait(timeout=420) == 0, log.read_text()[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    return "".join(log.read_text() for log in logs)


def rows(ctx: Context, sql: str, **params: Any) -> list[Any]:
    with session_scope(ctx.sessions) as s:
        return list(s.execute(text(sql), params).all())


def check_flags(client: TestClient, study_id: str) -> float:
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["complete"] == 2, study
    baseline = float(study["baseline"]["value"])
    for t in client.get(f"/v1/studies/{study_id}/trials").json()["items"]:
        assert t["below_baseline"] == (t["value"] < baseline), t  # set for trial 0 when the baseline landed
    return baseline


def test_a_lone_worker_trains_its_first_trial_before_the_baseline(client: TestClient, ctx: Context,
                                                                   settings: Settings, pairs: None,
                                                                   tmp_path: Path) -> None:
    study_id = submit(client, body("lone", max_concurrent=1))
    log = tmp_path / "worker.log"
    logs = wait_all([start_worker(settings, log, "--exit-when-idle", "3", **QUICK)], [log])
    check_flags(client, study_id)
    (recorded,) = rows(ctx, "SELECT baseline_recorded_at, baseline_attempts FROM studies WHERE id = :id",
                       id=study_id)
    first, second = rows(ctx, "SELECT number, started_at, finished_at FROM trials WHERE study_id = :id "
                              "ORDER BY number", id=study_id)
    # Trial 0, then the baseline, then trial 1 (all times from the database's clock).
    assert first.started_at < first.finished_at <= recorded.baseline_recorded_at < second.started_at, \
        (first, recorded, second)
    assert recorded.baseline_attempts == 1
    assert logs.count(f"study {study_id}: baseline ") == 1, logs[-3000:]


def test_two_workers_compute_the_baseline_once(client: TestClient, ctx: Context, settings: Settings,
                                               pairs: None, tmp_path: Path) -> None:
    study_id = submit(client, body("pair", max_concurrent=2))
    logs_at = [tmp_path / f"w{i}.log" for i in range(2)]
    logs = wait_all([start_worker(settings, p, "--exit-when-idle", "3", **QUICK) for p in logs_at], logs_at)
    check_flags(client, study_id)
    assert logs.count(f"study {study_id}: baseline ") == 1, logs[-3000:]
    (recorded,) = rows(ctx, "SELECT baseline_attempts FROM studies WHERE id = :id", id=study_id)
    assert recorded.baseline_attempts == 1
