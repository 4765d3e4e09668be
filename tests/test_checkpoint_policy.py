"""The adaptive checkpoint interval (workers/checkpoint_policy.py): as often as 2% of the trial's time allows,
never less often than the configured maximum; 0 = at every evaluation. Pure, no clock."""

from __future__ import annotations

import math

import pytest

from workers.checkpoint_policy import BUDGET, MIN_INTERVAL, CheckpointPolicy


def test_the_maximum_applies_until_a_cost_is_measured() -> None:
    policy = CheckpointPolicy(60.0)
    assert policy.cost is None and policy.interval() == 60.0
    assert not policy.due(59.9, evaluated=True) and policy.due(60.0, evaluated=False)


def test_a_cheap_checkpoint_is_taken_as_often_as_the_budget_allows() -> None:
    policy = CheckpointPolicy(60.0)
    policy.measured_copy(0.1)
    policy.measured_writer(0.3)
    assert policy.cost == pytest.approx(0.4)
    assert policy.interval() == pytest.approx(0.4 / BUDGET)  # 20 s: the cost is 2% of it
    assert policy.due(20.0, evaluated=False) and not policy.due(19.0, evaluated=True)
    assert not policy.over_budget()


def test_an_expensive_checkpoint_waits_the_maximum_and_says_it_is_over_budget() -> None:
    policy = CheckpointPolicy(60.0)
    policy.measured_copy(0.2)
    policy.measured_writer(2.8)  # 3 s a checkpoint would need 150 s for 2%
    assert policy.interval() == 60.0
    assert policy.over_budget()


def test_never_more_often_than_the_floor() -> None:
    policy = CheckpointPolicy(60.0)
    policy.measured_copy(0.0001)
    policy.measured_writer(0.0)
    assert policy.interval() == MIN_INTERVAL


def test_measurements_are_smoothed_so_one_outlier_does_not_rule() -> None:
    policy = CheckpointPolicy(600.0)
    policy.measured_copy(0.1)
    policy.measured_copy(0.1)
    policy.measured_copy(1.1)  # one slow copy (a busy machine)
    assert policy.copy_seconds == pytest.approx(0.6)
    assert policy.interval() == pytest.approx(0.6 / BUDGET)
    policy.measured_copy(0.1)
    assert policy.copy_seconds == pytest.approx(0.35)


def test_only_the_training_thread_counts_when_the_writer_is_free() -> None:
    policy = CheckpointPolicy(60.0, background_weight=0.0)
    policy.measured_copy(0.1)
    policy.measured_writer(5.0)
    assert policy.interval() == pytest.approx(5.0)


def test_zero_means_every_evaluation_and_infinity_never() -> None:
    every = CheckpointPolicy(0.0)
    every.measured_copy(5.0)
    assert every.every_evaluation and every.interval() == 0.0
    assert every.due(0.0, evaluated=True) and not every.due(1e9, evaluated=False)
    assert not every.over_budget()
    never = CheckpointPolicy(math.inf)
    never.measured_copy(0.001)
    assert not never.due(1e12, evaluated=True)


def test_a_fixed_interval_ignores_measurements() -> None:
    policy = CheckpointPolicy(20.0, adaptive=False)
    policy.measured_copy(0.01)
    assert policy.interval() == 20.0


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_a_negative_interval_or_cost_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_interval"):
        CheckpointPolicy(bad)
    with pytest.raises(ValueError, match="cost"):
        CheckpointPolicy(60.0).measured_copy(bad)
