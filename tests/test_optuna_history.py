"""A worker's Optuna history is bounded (service/store/optuna_history.py), on real PostgreSQL and Optuna tables
filled in bulk: exact below the bound, the newest and the best above it (the same whether read incrementally or
on a fresh join, so seeded sampling agrees across processes), join and ask cost flat in the history's size,
and pruners compare with the newest trials only."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from service.context import Context
from service.store import optuna_bridge
from service.store.optuna_history import BoundedStorage, HistoryBound
from tests.optunafill import DISTRIBUTION, Row, fill


def _study(ctx: Context, name: str = "history") -> int:
    return optuna.create_study(storage=ctx.optuna_storage, study_name=name, direction="maximize")._study_id


def _rows(n: int, seed: int, running: int = 0) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = rng.random()
        state = rng.choice(["COMPLETE", "COMPLETE", "PRUNED", "FAIL"])
        value = round(1 - (x - 0.3) ** 2 + rng.gauss(0, 0.01), 6) if state == "COMPLETE" else None
        rows.append(Row(state, x, value, {100: value if value is not None else 0.2}))
    return rows + [Row("RUNNING", rng.random()) for _ in range(running)]


def _shape(trials: list[FrozenTrial]) -> list[tuple[Any, ...]]:
    return [(t.number, t.state, t.value, t.params, t.intermediate_values) for t in trials]


def _tpe_x(store: optuna.storages.BaseStorage, name: str, seed: int = 7) -> float:
    """What a seeded TPE samples next for x, over what `store` shows it (nothing written)."""
    study = optuna.load_study(study_name=name, storage=store,
                              sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    probe = FrozenTrial(number=10**6, state=TrialState.RUNNING, value=None, datetime_start=None,
                        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                        intermediate_values={}, trial_id=-1)
    return float(study.sampler.sample_independent(study, probe, "x", DISTRIBUTION))


def test_below_the_bound_the_view_is_the_whole_history(ctx: Context) -> None:
    sid = _study(ctx)
    fill(ctx, sid, _rows(60, seed=1, running=3))
    bounded = BoundedStorage(ctx.optuna_storage, HistoryBound(recent=60, best=5))
    assert _shape(bounded.get_all_trials(sid)) == _shape(ctx.optuna_storage.get_all_trials(sid))
    assert _tpe_x(bounded, "history") == _tpe_x(ctx.optuna_storage, "history")


def test_above_the_bound_the_newest_and_the_best_incrementally_as_on_a_fresh_join(ctx: Context) -> None:
    sid = _study(ctx)
    ids = fill(ctx, sid, _rows(40, seed=2, running=2))
    bound = HistoryBound(recent=10, best=3)
    early = BoundedStorage(ctx.optuna_storage, bound)
    every = ctx.optuna_storage.get_all_trials(sid)
    finished = [t for t in every if t.state.is_finished()]
    best = sorted((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: -float(t.value or 0))[:3]
    expected = {t._trial_id for t in finished[-10:]} | {t._trial_id for t in best} | set(ids[-2:])
    assert {t._trial_id for t in early.get_all_trials(sid)} == expected
    assert len(expected) < len(every)

    # More history arrives: a new best, a running trial finishes, and the newest window moves on.
    fill(ctx, sid, [Row("COMPLETE", 0.3, 5.0, {100: 5.0})] + _rows(6, seed=3))
    ctx.optuna_storage.set_trial_state_values(ids[-2], TrialState.COMPLETE, [4.0])
    fresh = BoundedStorage(ctx.optuna_storage, bound)
    incremental = early.get_all_trials(sid)
    assert _shape(incremental) == _shape(fresh.get_all_trials(sid))
    values = [t.value for t in incremental]
    assert 5.0 in values and 4.0 in values
    assert len([t for t in incremental if t.state.is_finished()]) <= bound.recent + bound.best
    assert _tpe_x(early, "history") == _tpe_x(fresh, "history"), "seeded sampling agrees across processes"


def _join_and_ask(ctx: Context, name: str, bound: HistoryBound) -> tuple[float, float]:
    """Seconds for a fresh process's join (first read of the history) and for one ask (a new trial, TPE over
    the view, a float sampled and stored): the medians of 3."""
    joins, asks = [], []
    for _ in range(3):
        store = BoundedStorage(ctx.optuna_storage, bound)
        study = optuna.load_study(study_name=name, storage=store,
                                  sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
        t0 = time.perf_counter()
        store.get_all_trials(study._study_id, deepcopy=False)
        t1 = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        t2 = time.perf_counter()
        study.tell(trial, state=TrialState.FAIL)
        joins.append(t1 - t0)
        asks.append(t2 - t1)
    return statistics.median(joins), statistics.median(asks)


def test_join_and_ask_cost_stay_flat_past_the_bound(ctx: Context) -> None:
    sid = _study(ctx)
    bound = HistoryBound(recent=150, best=20)
    fill(ctx, sid, _rows(1_000, seed=4))
    join_small, ask_small = _join_and_ask(ctx, "history", bound)
    fill(ctx, sid, _rows(9_000, seed=5))
    join_large, ask_large = _join_and_ask(ctx, "history", bound)
    # Ten times the history; Optuna's own cache costs ~10x here on both counts.
    assert join_large < 3 * join_small + 0.01, (join_small, join_large)
    assert ask_large < 3 * ask_small + 0.01, (ask_small, ask_large)


def test_pruners_compare_with_the_newest_trials_only(ctx: Context) -> None:
    sid = _study(ctx)
    old = [Row("COMPLETE", 0.5, 0.9, {100: 0.9}) for _ in range(20)]
    new = [Row("COMPLETE", 0.5, 0.1, {100: 0.1}) for _ in range(10)]
    fill(ctx, sid, old + new)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1)
    verdicts = {}
    for label, store in (("window", BoundedStorage(ctx.optuna_storage, HistoryBound(recent=10, best=5))),
                         ("exact", BoundedStorage(ctx.optuna_storage, HistoryBound(recent=100, best=5)))):
        study = optuna.load_study(study_name="history", storage=store, pruner=pruner)
        (tid,) = fill(ctx, sid, [Row("RUNNING", 0.5, None, {100: 0.5})])
        verdicts[label] = optuna_bridge.should_prune(study, tid)
    # Median of the newest 10 (all 0.1): 0.5 goes on; of all 30 (0.9): pruned. The best-5 extras of the
    # sampler's view (0.9 each) are not the pruner's.
    assert verdicts == {"window": False, "exact": True}
