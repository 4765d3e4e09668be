"""The schedule-fraction pruner (`pruner.compare_at: schedule_fraction`, issue 12): a longer schedule that is
behind at equal examples but ahead at equal fractions of its schedule survives it where the median pruner on
examples prunes it; a bad trial is still pruned; the study spec refuses it with the other pruners (422 naming
`pruner.compare_at`).

The pruners are the ones stsweep builds (`optuna_bridge.make_pruner` from a StudySpec) and they run on a real
in-memory Optuna study with crafted curves: fast, no training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text

from service.context import Context
from service.core.spec import StudySpec, field_errors
from service.store import optuna_bridge
from service.store.db import session_scope
from service.store.fraction_pruner import PLANNED_ATTR, ScheduleFractionPruner
from tests.studyspecs import contract_study

EVERY = 128
# Completed 1-epoch trials (512 planned examples): their dev score at 128, 256, 384, 512 examples.
SHORT = [[0.80, 0.83, 0.85, 0.86], [0.79, 0.82, 0.84, 0.85], [0.81, 0.84, 0.86, 0.87]]


def spec_with(**pruner: Any) -> StudySpec:
    return StudySpec.model_validate(contract_study(pruner=pruner))


def study_with(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for curve in SHORT:
        trial = study.ask()
        trial.set_user_attr(PLANNED_ATTR, 4 * EVERY)
        for i, v in enumerate(curve, start=1):
            trial.report(v, i * EVERY)
        study.tell(trial, curve[-1])
    return study


def first_pruned_at(study: optuna.Study, curve: list[float], planned: int | None) -> int | None:
    """Report `curve` (one value per evaluation point) into a new trial; the examples where it is pruned."""
    trial = study.ask()
    if planned is not None:
        trial.set_user_attr(PLANNED_ATTR, planned)
    for i, v in enumerate(curve, start=1):
        trial.report(v, i * EVERY)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return i * EVERY
    study.tell(trial, curve[-1])
    return None


# A 2-epoch trial (1,024 planned): behind the 1-epoch trials at equal examples (0.815 < 0.83 at 256), ahead at
# equal fractions (at 256 = 25% of its schedule, against theirs at 25% = 128: 0.80), and best at its end.
LONG = [0.78, 0.815, 0.835, 0.85, 0.865, 0.875, 0.88, 0.885]
BAD = [0.50, 0.52, 0.53, 0.54]


def test_median_on_examples_prunes_the_longer_schedule() -> None:
    pruner = optuna_bridge.make_pruner(spec_with(name="median", n_startup_trials=2))
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert first_pruned_at(study_with(pruner), LONG, 8 * EVERY) == EVERY  # 0.78 < 0.80 at 128 examples


def test_schedule_fraction_keeps_the_longer_schedule_and_prunes_a_bad_one() -> None:
    spec = spec_with(name="median", n_startup_trials=2, compare_at="schedule_fraction")
    pruner = optuna_bridge.make_pruner(spec)
    assert isinstance(pruner, ScheduleFractionPruner)
    study = study_with(pruner)
    assert first_pruned_at(study, LONG, 8 * EVERY) is None
    assert first_pruned_at(study, BAD, 4 * EVERY) == EVERY
    # The finished long trial is a peer too: at 512 examples (50% of 1,024) another long trial is compared with
    # the short trials at 256 and the long one at 512 (median 0.835).
    assert first_pruned_at(study, [0.79, 0.808, 0.82, 0.83], 8 * EVERY) == 4 * EVERY


def test_a_long_schedule_that_is_behind_at_equal_fractions_is_pruned() -> None:
    pruner = optuna_bridge.make_pruner(spec_with(name="median", n_startup_trials=2, compare_at="schedule_fraction"))
    # At 256 (25%) 0.79 < the short trials' 0.80 at 128 (their 25%).
    assert first_pruned_at(study_with(pruner), [0.70, 0.79, 0.80, 0.81, 0.82, 0.83, 0.84, 0.85], 8 * EVERY) == 2 * EVERY


def test_percentile_settings_hold_at_fractions() -> None:
    spec = spec_with(name="percentile", percentile=25.0, n_startup_trials=2, n_warmup_steps=2 * EVERY,
                     compare_at="schedule_fraction")
    pruner = optuna_bridge.make_pruner(spec)
    study = study_with(pruner)
    # Warmup: nothing before 256 examples. 25th percentile kept from the top: at 256 the top quarter of
    # [0.82, 0.83, 0.84] starts at 0.835, so 0.831 is pruned there.
    assert first_pruned_at(study, [0.10, 0.831, 0.9, 0.9], 4 * EVERY) == 2 * EVERY
    # Too few trials completed yet: never pruned.
    early = optuna.create_study(direction="maximize", pruner=ScheduleFractionPruner(n_startup_trials=5))
    assert first_pruned_at(early, BAD, 4 * EVERY) is None


def test_trials_without_a_planned_schedule_are_not_judged_nor_peers() -> None:
    pruner = ScheduleFractionPruner(n_startup_trials=1)
    assert first_pruned_at(study_with(pruner), BAD, None) is None
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()  # a completed trial without the attribute: no peer, nothing to compare with
    for i, v in enumerate(SHORT[0], start=1):
        trial.report(v, i * EVERY)
    study.tell(trial, SHORT[0][-1])
    assert first_pruned_at(study, BAD, 4 * EVERY) is None


def test_planned_examples_written_once_and_not_after_the_end() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    optuna_bridge.set_planned_examples(study, trial._trial_id, 1024)
    optuna_bridge.set_planned_examples(study, trial._trial_id, 1024)
    assert study.trials[0].user_attrs[PLANNED_ATTR] == 1024
    study.tell(trial, 0.5)
    optuna_bridge.set_planned_examples(study, trial._trial_id, 2048)  # finished: left alone, no error
    assert study.trials[0].user_attrs[PLANNED_ATTR] == 1024


@pytest.mark.parametrize("name", ["successive_halving", "hyperband", "none"])
def test_compare_at_fraction_only_with_median_or_percentile(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec_with(name=name, compare_at="schedule_fraction")
    errors = field_errors(info.value)
    assert errors[0]["field"] == "pruner.compare_at", errors
    assert "median and percentile" in errors[0]["message"]
    assert spec_with(name=name).pruner.compare_at == "examples"


def assert_refused(client: TestClient, ctx: Context, body: dict[str, Any], fragment: str = "") -> None:
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "pruner.compare_at", error
    assert fragment in error["message"], error
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT count(*) FROM studies")).scalar_one() == 0


def test_api_refuses_compare_at_with_successive_halving(client: TestClient, ctx: Context) -> None:
    body = contract_study(pruner={"name": "successive_halving", "compare_at": "schedule_fraction"})
    assert_refused(client, ctx, body, "median and percentile")
    assert_refused(client, ctx, contract_study(pruner={"name": "median", "compare_at": "steps"}))


def test_api_accepts_schedule_fraction(client: TestClient, data_root: Path) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    body = contract_study(pruner={"name": "percentile", "percentile": 40, "compare_at": "schedule_fraction"})
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
