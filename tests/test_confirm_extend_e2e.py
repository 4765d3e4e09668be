"""Confirm runs, extend and warm start with real training: real PostgreSQL, the real all-MiniLM-L6-v2, the
bundled pairs and one real worker process. Tiny subsets keep each trial to seconds on two CPU cores."""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.context import Context
from service.settings import Settings
from tests.test_worker_e2e import pair_files  # noqa: F401  (a fixture)
from tests.test_worker_e2e import study_body as worker_study_body
from tests.workerproc import start_worker, wait_for

pytestmark = pytest.mark.slow

EVERY = 32
SPACE = {"learning_rate": {"distribution": "float", "low": 2e-5, "high": 8e-5, "log": True},
         "per_device_train_batch_size": {"distribution": "categorical", "choices": [32, 64]},
         "max_seq_length": 48, "warmup_ratio": 0.0, "loss": "CoSENTLoss"}


def study_body(name: str, **overrides: Any) -> dict[str, Any]:
    """tests/test_worker_e2e.py's study on 64 training pairs, two trials, random sampling, one kept checkpoint."""
    body = worker_study_body(name, search_space=SPACE, sampler={"name": "random", "seed": 0},
                             evaluation={"every_n_examples": EVERY, "max_eval_samples": 16},
                             budget={"n_trials": 2, "max_concurrent_trials": 1}, keep_top_k=1)
    body["data"]["max_train_samples"] = 64
    body.update(overrides)
    return body


def study(client: TestClient, study_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/studies/{study_id}").json())


def trials(client: TestClient, study_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/studies/{study_id}/trials", params={"limit": 100}).json()["items"])


def settled(client: TestClient, study_id: str) -> bool:
    """Completed, with the winner's test score in (not an older winner's)."""
    s = study(client, study_id)
    return s["status"] == "completed" and s["test"] is not None and not s["test"]["rescoring"]


def optuna_trials(ctx: Context, study_id: str) -> int:
    storage = ctx.optuna_storage
    return len(storage.get_all_trials(storage.get_study_id_from_name(f"stsweep-{study_id}")))


def expected_winner(rows: list[dict[str, Any]]) -> tuple[list[int], float, float]:
    """(trial numbers, mean, std) of the confirmed configuration with the best mean, from the trials' values."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in rows:
        if t["state"] == "complete":
            groups.setdefault(repr(sorted(t["params"].items())), []).append(t)
    confirmed = [g for g in groups.values() if any(t["kind"] == "confirm" for t in g)]
    best = max(confirmed, key=lambda g: statistics.mean(t["value"] for t in g))
    values = [t["value"] for t in best]
    return sorted(t["number"] for t in best), statistics.mean(values), statistics.stdev(values)


def test_confirm_extend_and_warm_start(client: TestClient, ctx: Context, settings: Settings, pair_files: None,
                                      tmp_path: Path) -> None:
    first = client.post("/v1/studies", json=study_body("confirm", confirm={"top_k": 1, "seeds": 2}))
    assert first.status_code == 201, first.text
    study_id = first.json()["id"]
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_for(lambda: settled(client, study_id), 300, "the study, its confirm runs and its test score")
        rows = trials(client, study_id)
        search = [t for t in rows if t["kind"] == "search"]
        confirm = [t for t in rows if t["kind"] == "confirm"]
        assert [t["number"] for t in search] == [0, 1] and [t["number"] for t in confirm] == [2, 3]
        top = max(search, key=lambda t: t["value"])
        assert all(t["confirm_of"] == top["number"] and t["params"] == top["params"] for t in confirm)
        assert all(t["state"] == "complete" and t["intermediate"] for t in confirm)
        seeds = [t["train_seed"] for t in confirm]
        assert len(set(seeds)) == 2 and None not in seeds, "each confirm run trains with its own seed"
        summary = study(client, study_id)
        numbers, mean, std = expected_winner(rows)
        winner = summary["winner"]
        assert winner["trial_numbers"] == numbers == sorted([top["number"], 2, 3]) and winner["runs"] == 3
        assert winner["params"] == top["params"]
        assert winner["mean"] == pytest.approx(mean) and winner["std"] == pytest.approx(std)
        best_run = max((t for t in rows if t["number"] in numbers), key=lambda t: (t["value"], -t["number"]))
        head = client.head(f"/v1/studies/{study_id}/best-checkpoint")
        assert head.status_code == 200 and int(head.headers["x-trial-number"]) == best_run["number"]
        assert summary["test"]["trial_number"] == best_run["number"]
        assert optuna_trials(ctx, study_id) == 2, "confirm runs are not Optuna trials"

        extended = client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": 1})
        assert extended.status_code == 200 and extended.json()["status"] == "running", extended.text
        wait_for(lambda: settled(client, study_id), 240, "the extended study to complete again")
        rows = trials(client, study_id)
        assert rows[4]["kind"] == "search" and rows[4]["state"] == "complete"
        assert optuna_trials(ctx, study_id) == 3, "the new slot is an Optuna trial; the history is kept"
        assert len(rows) in (5, 7), "a new top configuration gets its two confirm runs, an old one none"
        assert study(client, study_id)["winner"]["trial_numbers"] == expected_winner(rows)[0]
        winner_params = study(client, study_id)["winner"]["params"]

        narrow = {**SPACE, "learning_rate": {"distribution": "float", "low": 1e-6, "high": 1e-5, "log": True}}
        refused = client.post("/v1/studies", json=study_body("narrow", search_space=narrow,
                                                             warm_start_from=study_id))
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "warm_start_from"
        assert "search_space.learning_rate" in refused.json()["error"]["message"]
        assert client.get("/v1/studies").json()["total"] == 1, "nothing stored"

        warm = client.post("/v1/studies", json=study_body("warm", budget={"n_trials": 1, "max_concurrent_trials": 1},
                                                          warm_start_from=study_id))
        assert warm.status_code == 201, warm.text
        warm_id = warm.json()["id"]
        # Trial 0 is sampled by the worker when it claims it: the old winner's configuration. (No need to train it.)
        wait_for(lambda: trials(client, warm_id)[0]["params"], 120, "the worker to sample trial 0")
        assert trials(client, warm_id)[0]["params"] == winner_params, "trial 0 is the old winner's configuration"
        assert client.post(f"/v1/studies/{warm_id}/stop").status_code == 200
    finally:
        stop(worker)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
