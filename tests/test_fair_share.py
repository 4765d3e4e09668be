"""Fair share between projects (service/store/fair_share.py) on real PostgreSQL: real claiming processes get
claims in proportion to the projects' shares, with no duplicate claim; a project back from idle (or a new one)
gets no burst; and a real worker process alternates between two projects whatever their creation order and
their numbers of queued trials."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from service.context import Context
from service.core.schemas import ProjectCreate
from service.core.spec import StudySpec
from service.settings import Settings
from service.store import optuna_bridge, projects, queue, studies
from service.store.db import session_scope
from tests.conftest import ROOT
from tests.faultkit import tiny_study, write_pairs
from tests.studyspecs import contract_study
from tests.workerproc import run_until_idle

RACERS = 6


def _project(ctx: Context, name: str, share: float = 1.0) -> str:
    projects.create_project(ctx.sessions, ProjectCreate(name=name, share=share))
    return name


def _study(ctx: Context, project: str, n_trials: int, max_concurrent: int = 8) -> str:
    spec = StudySpec.model_validate(contract_study(
        name=f"{project}-study", budget={"n_trials": n_trials, "max_concurrent_trials": max_concurrent}))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {}, project=project)
    return study_id


def _claim_one(ctx: Context) -> str:
    """One claim, finished at once; the project it went to."""
    got = queue.claim(ctx.sessions, None, 60)
    assert got is not None, "a claim came back empty while work was queued"
    claim, study_id = got
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.5), 3)
    with session_scope(ctx.sessions) as s:
        return str(s.execute(text("SELECT project FROM studies WHERE id = :s"), {"s": study_id}).scalar_one())


def _claims_in_order(ctx: Context) -> list[tuple[int, str]]:
    """(trial id, project) of every claimed trial, in the order they were claimed."""
    with session_scope(ctx.sessions) as s:
        return [(int(r.id), str(r.project)) for r in s.execute(text(
            "SELECT t.id, st.project FROM trials t JOIN studies st ON st.id = t.study_id "
            "WHERE t.started_at IS NOT NULL ORDER BY t.started_at, t.id")).all()]


def _race(ctx: Context, tmp_path: Path, tag: str) -> list[dict[str, object]]:
    """RACERS real processes (tests/queue_racer.py) claim and finish until the queue is dry; their claims."""
    outs = [tmp_path / f"{tag}-{i}.jsonl" for i in range(RACERS)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue_racer", ctx.database_url, str(out)], cwd=ROOT)
             for out in outs]
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [json.loads(line) for out in outs for line in out.read_text().splitlines()]


@pytest.mark.parametrize("shares", [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 1.0, "c": 2.0}],
                         ids=["2:1", "1:1:2"])
def test_racing_processes_get_claims_in_proportion_to_the_shares(ctx: Context, tmp_path: Path,
                                                                 shares: dict[str, float]) -> None:
    total = sum(shares.values())
    # Created in the reverse order of the shares (the biggest share last, with as many slots as any): neither
    # creation order nor queue length may decide.
    slots = {name: int(90 * share / max(shares.values())) + 45 for name, share in shares.items()}
    for name in sorted(shares, reverse=True):
        _project(ctx, name, shares[name])
        _study(ctx, name, slots[name])
    claims = _race(ctx, tmp_path, "race")
    ids = [c["trial_id"] for c in claims]
    assert len(ids) == sum(slots.values()) and len(set(ids)) == len(ids), "every slot claimed once"
    assert all(c["attempt"] == 1 for c in claims)
    # While every project has work: the claims up to the first project running dry, 90 % of them.
    order = [project for _, project in _claims_in_order(ctx)]
    window = int(0.9 * min(slots[name] * total / share for name, share in shares.items()))
    got = Counter(order[:window])
    for name, share in shares.items():
        assert abs(got[name] / window - share / total) < 0.05, (name, got, window)


def test_claims_alternate_whatever_the_creation_order_and_queue_length(ctx: Context) -> None:
    _project(ctx, "old")
    _study(ctx, "old", 30)
    _project(ctx, "late")
    _study(ctx, "late", 3)
    assert [_claim_one(ctx) for _ in range(8)] == ["old", "late"] * 3 + ["old", "old"]


def test_a_project_back_from_idle_or_new_gets_no_burst(ctx: Context) -> None:
    for name in ("a", "b", "idle"):
        _project(ctx, name)
    _study(ctx, "a", 200)
    _study(ctx, "b", 200)
    assert Counter(_claim_one(ctx) for _ in range(40)) == {"a": 20, "b": 20}
    # `idle` had nothing queued during those 40 claims; `new` did not exist.
    _study(ctx, "idle", 50)
    _project(ctx, "new")
    _study(ctx, "new", 50)
    after = [_claim_one(ctx) for _ in range(24)]
    assert Counter(after) == {"a": 6, "b": 6, "idle": 6, "new": 6}, after
    assert max(len(run) for run in _runs(after)) == 1, after


def test_with_one_project_working_no_project_row_is_written(ctx: Context) -> None:
    _project(ctx, "solo")
    _study(ctx, "solo", 5)
    with session_scope(ctx.sessions) as s:
        before = s.execute(text("SELECT name, vtime, xmin::text FROM projects ORDER BY name")).all()
    assert [_claim_one(ctx) for _ in range(5)] == ["solo"] * 5
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT name, vtime, xmin::text FROM projects ORDER BY name")).all() == before


def _runs(seq: list[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    for item in seq:
        if runs and runs[-1][0] == item:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


@pytest.mark.slow
def test_a_real_worker_alternates_between_two_projects(ctx: Context, settings: Settings, data_root: Path,
                                                       tmp_path: Path) -> None:
    body = {"data": {"train": {"path": "pairs/train.jsonl"}, "eval": {"path": "pairs/dev.jsonl"},
                     "score_range": [0, 5], "max_train_samples": 16},
            "evaluation": {"every_n_examples": 16, "max_eval_samples": 8}}
    # Project `first`'s study is created first and has ten times the trials of `second`'s (oldest study first,
    # the worker would run `first` only). It runs four trials, then exits.
    for name, n in (("first", 20), ("second", 2)):
        _project(ctx, name)
        write_pairs(data_root / name, train=32, dev=16, test=16)  # the project's data folder
        spec = StudySpec.model_validate(tiny_study(name, budget={"n_trials": n, "max_concurrent_trials": 1}, **body))
        study_id = studies.new_study_id()
        optuna_bridge.create_study(ctx.optuna_storage, f"stsweep-{study_id}", spec)
        studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {}, project=name)
    run_until_idle(settings, tmp_path / "worker.log", 240, "--max-trials", "4")
    with session_scope(ctx.sessions) as s:
        states = dict(s.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all())
    assert states == {"complete": 4, "queued": 18}, states
    assert [project for _, project in _claims_in_order(ctx)] == ["first", "second", "first", "second"]
