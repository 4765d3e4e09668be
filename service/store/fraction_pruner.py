"""A median / percentile pruner fair to schedule length: trials are compared at equal fractions of their own
planned schedules, not at equal examples seen (`pruner.compare_at: schedule_fraction`).

Why: with a linear schedule (and warmup a ratio of it), a trial planned for 2 epochs is, at any number of
examples, at an earlier point of its schedule than a 1-epoch trial: its learning rate is higher and it has not
annealed yet, so it is behind by construction. Optuna's MedianPruner compares at equal steps (examples) and so
prunes long schedules before they can pay off. Here a trial that has seen `e` of its planned `P` examples is
compared with the completed trials' values at the same fraction `e / P` of their own planned examples (the value
at their largest reported point <= fraction * their P; a trial counts only if it got that far).

Each trial's planned examples come from the worker, as the Optuna user attribute `PLANNED_ATTR`, set once before
its first report. A trial without it is never pruned by this rule (its fraction is unknown), and a completed
trial without it is not a peer.

The other settings mean what they mean for Optuna's PercentilePruner: `percentile` (50: the median),
`n_startup_trials` (no pruning until that many trials completed), `n_warmup_steps` (no pruning before that many
examples), `interval_steps` (examples between pruning checks, from the warmup), `n_min_trials` (peers needed at
that fraction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

PLANNED_ATTR = "stsweep:planned_examples"


def planned_examples(trial: FrozenTrial) -> int | None:
    value = trial.user_attrs.get(PLANNED_ATTR)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def value_at_fraction(trial: FrozenTrial, fraction: float, planned: int) -> float | None:
    """The trial's value at its largest reported point <= fraction * planned, if it got that far."""
    if not trial.intermediate_values:
        return None
    target = fraction * planned
    if max(trial.intermediate_values) < target - 1e-9:  # did not get that far (pruned, early-stopped, failed)
        return None
    below = [step for step in trial.intermediate_values if step <= target + 1e-9]
    if not below:
        return None
    return float(trial.intermediate_values[max(below)])


class ScheduleFractionPruner(BasePruner):
    def __init__(self, percentile: float = 50.0, *, n_startup_trials: int = 5, n_warmup_steps: int = 0,
                 interval_steps: int = 1, n_min_trials: int = 1) -> None:
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), got {percentile}")
        self._percentile = percentile
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps
        self._interval_steps = interval_steps
        self._n_min_trials = n_min_trials

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed or len(completed) < self._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        if not self._is_check_step(step, trial.intermediate_values.keys()):
            return False
        planned = planned_examples(trial)
        if planned is None:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        values = np.asarray(list(trial.intermediate_values.values()), dtype=float)
        if np.all(np.isnan(values)):
            return True
        best = float(np.nanmax(values) if maximize else np.nanmin(values))
        fraction = min(step / planned, 1.0)
        peers = []
        for other in completed:
            p = planned_examples(other)
            if p is None or other.number == trial.number:
                continue
            v = value_at_fraction(other, fraction, p)
            if v is not None:
                peers.append(v)
        if len(peers) < self._n_min_trials:
            return False
        q = 100.0 - self._percentile if maximize else self._percentile
        threshold = float(np.nanpercentile(np.asarray(peers, dtype=float), q))
        if math.isnan(threshold):
            return False
        return best < threshold if maximize else best > threshold

    def _is_check_step(self, step: int, steps: Any) -> bool:
        """As Optuna's percentile pruner: check at the first report at or past each interval mark."""
        nearest_lower = (step - self._n_warmup_steps) // self._interval_steps * self._interval_steps \
            + self._n_warmup_steps
        second_last = max((s for s in steps if s != step), default=-1)
        return second_last < nearest_lower
