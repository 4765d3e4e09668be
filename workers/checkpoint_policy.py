"""When the next resumable checkpoint is due: as often as a budget of 2% of the trial's time allows, and never
less often than the configured maximum interval (`STSWEEP_CHECKPOINT_EVERY_SECONDS`).

A checkpoint costs the trial what the training thread spends copying the state in memory, plus the CPU time the
writer thread spends serialising, packing and hashing it beside training (on a CPU worker those are the cores
training runs on; on a GPU host they feed the other trials). Both are measured at every checkpoint and smoothed;
the next interval is `cost / budget`, between `min_interval` and the maximum. Before the first measurement the
maximum applies. A maximum of 0 means "at every evaluation" (tests), and infinity "only when interrupted".

Pure: no torch, no clock. The trainer callback (workers/trial_callback.py) feeds it seconds and asks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUDGET = 0.02  # checkpoints may cost this share of the trial's time
MIN_INTERVAL = 1.0  # seconds: never more often, whatever the measurements say
SMOOTHING = 0.5  # weight of the newest measurement in the running estimates


@dataclass
class CheckpointPolicy:
    max_interval: float  # seconds; 0: at every evaluation; math.inf: only when the trial is interrupted
    budget: float = BUDGET
    min_interval: float = MIN_INTERVAL
    adaptive: bool = True  # False: always the maximum (benchmarks comparing paths at one fixed interval)
    background_weight: float = 1.0  # how much a second of the writer thread's CPU time counts
    copy_seconds: float | None = None  # smoothed training-thread seconds of one checkpoint (the in-memory copy)
    writer_seconds: float | None = None  # smoothed writer-thread CPU seconds of one checkpoint

    def __post_init__(self) -> None:
        if not self.max_interval >= 0:  # NaN too
            raise ValueError(f"max_interval must be >= 0, not {self.max_interval!r}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1], not {self.budget!r}")

    @property
    def every_evaluation(self) -> bool:
        return self.max_interval == 0

    @property
    def cost(self) -> float | None:
        """Estimated seconds one checkpoint costs the trial (None before any measurement)."""
        if self.copy_seconds is None and self.writer_seconds is None:
            return None
        return (self.copy_seconds or 0.0) + self.background_weight * (self.writer_seconds or 0.0)

    def interval(self) -> float:
        """Seconds from the end of one checkpoint (or the start of training) to the next one."""
        if self.every_evaluation or math.isinf(self.max_interval):
            return self.max_interval
        cost = self.cost
        if not self.adaptive or cost is None:
            return self.max_interval
        return min(self.max_interval, max(self.min_interval, cost / self.budget))

    def due(self, elapsed: float, evaluated: bool) -> bool:
        """Whether a checkpoint is due `elapsed` seconds after the last one, at a step that just `evaluated`."""
        if self.every_evaluation:
            return evaluated
        return elapsed >= self.interval()

    def measured_copy(self, seconds: float) -> None:
        """The training thread spent `seconds` on a checkpoint."""
        self.copy_seconds = _smooth(self.copy_seconds, seconds)

    def measured_writer(self, cpu_seconds: float) -> None:
        """The writer thread spent `cpu_seconds` of CPU time writing and uploading a checkpoint."""
        self.writer_seconds = _smooth(self.writer_seconds, cpu_seconds)

    def over_budget(self) -> bool:
        """True when even the maximum interval cannot keep the measured cost within the budget."""
        cost = self.cost
        return cost is not None and not self.every_evaluation and cost > self.budget * self.max_interval


def _smooth(old: float | None, new: float) -> float:
    if not new >= 0:
        raise ValueError(f"a measured cost must be >= 0, not {new!r}")
    return new if old is None else SMOOTHING * new + (1 - SMOOTHING) * old


__all__ = ["BUDGET", "MIN_INTERVAL", "CheckpointPolicy"]
