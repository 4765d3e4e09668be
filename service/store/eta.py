"""A study's ETA, from what its trials did so far (no SQL here: `studies._summarize` gathers the aggregates in
the one GROUP BY it already runs over the trials, so a list of many studies costs no per-trial work).

The naive `elapsed * (1 - fraction) / fraction` assumes every remaining trial trains its whole plan; with pruning
most stop early. So the remaining work is counted in examples:

- a queued slot is expected to train the mean `examples_seen` of the finished (complete and pruned) trials;
- a running trial, its planned examples discounted by the observed ratio of examples seen at finish to planned
  examples (never less than what it has already seen);

divided by the study's observed throughput: all examples its trials trained over its elapsed wall time
(concurrency included). Before any trial finished, the running trials' own ETAs and plans stand in.

`budget.timeout_seconds` bounds it: once the timeout passes no trial starts, and the running ones finish, so the
ETA is at most the time left (or, when a running trial needs longer, that trial's own ETA). `eta_bound` says
which bound gave the answer: "trials" (the remaining trials) or "timeout".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.core.schemas import RunningTrial

EtaBound = Literal["trials", "timeout"]
FINISHED_STATES = ("complete", "pruned")


@dataclass
class ExampleTotals:
    """One study's trials, summed (filled from one GROUP BY row per trial state)."""

    finished: int = 0  # complete + pruned trials
    finished_examples: int = 0  # examples they trained
    finished_seen_of_planned: int = 0  # examples trained by those of them with a plan ...
    finished_planned: int = 0  # ... and what those planned
    all_examples: int = 0  # examples trained by every trial, in any state

    def add(self, state: str, count: int, examples: int, seen_of_planned: int, planned: int) -> None:
        self.all_examples += examples
        if state in FINISHED_STATES:
            self.finished += count
            self.finished_examples += examples
            self.finished_seen_of_planned += seen_of_planned
            self.finished_planned += planned


def estimate(*, elapsed: float | None, fraction: float, slots_left: int, running: list[RunningTrial],
             totals: ExampleTotals, timeout_seconds: float | None) -> tuple[float | None, EtaBound | None]:
    """(eta_seconds, eta_bound) of an active study that has started (`elapsed` seconds ago); `slots_left` are
    the trials still to start."""
    if not elapsed or elapsed <= 0:
        return None, None
    if totals.finished > 0:
        trials_eta = _from_history(elapsed, slots_left, running, totals)
    else:
        trials_eta = _from_running(slots_left, running)
    if trials_eta is None and fraction > 0:
        trials_eta = elapsed * (1 - fraction) / fraction  # nothing better known yet
    if timeout_seconds is None:
        return trials_eta, ("trials" if trials_eta is not None else None)
    # The timeout stops new trials; running ones finish past it.
    limit = max(timeout_seconds - elapsed, max((t.eta_seconds or 0.0 for t in running), default=0.0), 0.0)
    if trials_eta is None or trials_eta > limit:
        return limit, "timeout"
    return trials_eta, "trials"


def _from_history(elapsed: float, slots_left: int, running: list[RunningTrial], totals: ExampleTotals
                  ) -> float | None:
    throughput = totals.all_examples / elapsed
    if throughput <= 0:
        return None
    mean_examples = totals.finished_examples / totals.finished
    ratio = totals.finished_seen_of_planned / totals.finished_planned if totals.finished_planned > 0 else None
    left = slots_left * mean_examples
    for t in running:
        expected = t.planned_examples * ratio if t.planned_examples and ratio is not None else mean_examples
        left += max(0.0, expected - t.examples_seen)
    return left / throughput


def _from_running(slots_left: int, running: list[RunningTrial]) -> float | None:
    """No trial finished yet: each running trial's own rate (its remaining plan over its ETA), and a queued
    slot is expected to train the mean plan of the running ones."""
    rate, left, plans = 0.0, 0.0, []
    for t in running:
        if not t.planned_examples:
            continue
        plans.append(t.planned_examples)
        remaining = max(0, t.planned_examples - t.examples_seen)
        left += remaining
        if t.eta_seconds and t.eta_seconds > 0 and remaining > 0:
            rate += remaining / t.eta_seconds
    if rate <= 0:
        return None
    return (left + slots_left * sum(plans) / len(plans)) / rate
