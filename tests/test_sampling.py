"""Sampling never repeats a configuration across worker processes, restarts or study switches, and a seeded
study re-run samples the same parameters per trial number (real processes racing on real PostgreSQL and
Optuna storage; the worker's own sampling code). Grid studies end without Optuna's `study.stop()` error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna

from service.context import Context
from service.store import reconcile
from tests.conftest import ROOT
from tests.faultkit import create_study, one
from tests.studyspecs import contract_study


def _body(n: int, max_concurrent: int = 4, **overrides: Any) -> dict[str, Any]:
    body = contract_study(name="sampling", budget={"n_trials": n, "max_concurrent_trials": max_concurrent})
    body["search_space"] = {
        "learning_rate": {"distribution": "float", "low": 1e-5, "high": 1e-4, "log": True},
        "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2},
        "per_device_train_batch_size": {"distribution": "categorical", "choices": [16, 32]},
    }
    body["sampler"] = {"name": "tpe", "seed": 0, "n_startup_trials": 4}
    body.update(overrides)
    return body


def _race(ctx: Context, tmp_path: Path, n: int, *args: str) -> list[list[dict[str, Any]]]:
    outs = [tmp_path / f"racer-{len(list(tmp_path.glob('racer-*')))}-{i}.jsonl" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.sampleracer", ctx.database_url, str(out), *args],
                              cwd=ROOT) for out in outs]
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [[json.loads(line) for line in out.read_text().splitlines()] for out in outs]


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted(params.items()))


def test_three_workers_on_one_seeded_study_never_sample_the_same_point(ctx: Context, tmp_path: Path) -> None:
    study_id = create_study(ctx, _body(12, max_concurrent=3))
    per_process = _race(ctx, tmp_path, 3)
    trials = [t for got in per_process for t in got]
    assert sorted(t["number"] for t in trials) == list(range(12))
    assert sum(1 for got in per_process if got) >= 2, "the processes really raced"
    assert len({_key(t["params"]) for t in trials}) == 12, "no configuration sampled twice"
    assert reconcile.disagreements(ctx, study_id) == []


def test_a_restarted_worker_goes_on_instead_of_starting_over(ctx: Context, tmp_path: Path) -> None:
    create_study(ctx, _body(6, max_concurrent=1))
    (first,) = _race(ctx, tmp_path, 1, "--max", "3")
    (second,) = _race(ctx, tmp_path, 1)  # a new process: the sampler rebuilt with the same seed
    assert [t["number"] for t in first + second] == list(range(6))
    assert len({_key(t["params"]) for t in first + second}) == 6


def test_switching_studies_back_and_forth_repeats_nothing(ctx: Context, tmp_path: Path) -> None:
    a = create_study(ctx, _body(4, max_concurrent=1))
    b = create_study(ctx, _body(4, max_concurrent=1))
    from service.store import lifecycle

    lifecycle.change_status(ctx.sessions, b, "pause")
    (trials,) = _race(ctx, tmp_path, 1, "--alternate", f"{a},{b}")
    assert [t["study_id"] for t in trials] == [a, b] * 4, "every trial switched studies"
    for sid in (a, b):
        mine = [t for t in trials if t["study_id"] == sid]
        assert len({_key(t["params"]) for t in mine}) == 4, sid


def test_a_seeded_study_re_run_samples_the_same_parameters_per_trial(ctx: Context, tmp_path: Path) -> None:
    first = create_study(ctx, _body(6, max_concurrent=1))
    (run1,) = _race(ctx, tmp_path, 1)
    second = create_study(ctx, _body(6, max_concurrent=1))
    (run2,) = _race(ctx, tmp_path, 1)
    assert {t["study_id"] for t in run1} == {first} and {t["study_id"] for t in run2} == {second}
    assert [t["params"] for t in run1] == [t["params"] for t in run2]
    # And another seed gives another sweep.
    other = create_study(ctx, _body(6, max_concurrent=1, sampler={"name": "tpe", "seed": 1, "n_startup_trials": 4}))
    (run3,) = _race(ctx, tmp_path, 1)
    assert {t["study_id"] for t in run3} == {other}
    assert [t["params"] for t in run3] != [t["params"] for t in run1]


def test_a_grid_study_covers_its_grid_once_and_ends_cleanly(ctx: Context, tmp_path: Path) -> None:
    body = _body(4, max_concurrent=4, sampler={"name": "grid"})
    body["search_space"] = {"learning_rate": {"distribution": "categorical", "choices": [1e-5, 3e-5]},
                            "warmup_ratio": {"distribution": "categorical", "choices": [0.0, 0.1]},
                            "per_device_train_batch_size": 16}
    study_id = create_study(ctx, body)
    trials = [t for got in _race(ctx, tmp_path, 3) for t in got]
    assert len({_key(t["params"]) for t in trials}) == 4, "each grid point once"
    assert one(ctx, "SELECT status FROM studies WHERE id = :s", s=study_id).status == "completed"
    name = one(ctx, "SELECT optuna_study_name FROM studies WHERE id = :s", s=study_id).optuna_study_name
    frozen = optuna.load_study(study_name=name, storage=ctx.optuna_storage).trials
    assert [t.state.name for t in frozen] == ["COMPLETE"] * 4, "the last tell did not raise"
