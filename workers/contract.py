"""What the worker loop hands the trainer, and what it gets back.

The loop (workers/loop.py) owns the queue, leases, Optuna and the artifact store; the trainer
(workers/training.py) owns torch. They meet only through these types.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from service.core.spec import StudySpec


@dataclass(frozen=True)
class TrialRun:
    """One attempt at one trial."""

    study_id: str
    trial_number: int
    spec: StudySpec
    params: dict[str, Any]  # sampled values by Optuna name: "learning_rate", "loss", "CoSENTLoss.scale", ...
    work_dir: Path  # local scratch, private to this attempt
    resume_from: Path | None = None  # a folder written earlier through TrialHooks.save_checkpoint
    reported_points: frozenset[int] = field(default_factory=frozenset)  # examples_seen already reported
    train_seed: int | None = None  # a confirm run's own training seed (None: the study's `seed`)
    # What to train in: 'fp32', 'bf16' or 'fp16', as the loop resolved and recorded it (None: resolve the study's
    # `precision` for the device here; workers/devices.py precision_for).
    precision: str | None = None


class TrialHooks(Protocol):
    """How the trainer talks back to the loop. Every call is cheap unless it says otherwise."""

    def report(self, examples_seen: int, value: float) -> bool:
        """Record an intermediate value at `examples_seen`. Returns True when the trial should be pruned."""

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        """Training progress, for the API and dashboard (rate-limited by the loop)."""

    def checkpoint_interval(self) -> float:
        """The longest time between two resumable checkpoints, in seconds (0: at every evaluation; math.inf:
        only when interrupted). The trainer checkpoints more often when that costs under 2% of the trial's time
        (workers/checkpoint_policy.py)."""

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event) -> None:
        """Persist a resumable checkpoint folder (blocking; uploads to the artifact store, then records it).
        Called on the checkpoint writer thread while training goes on, one call at a time, in order
        (workers/checkpoint_writer.py); the folder stays in place until the call returns. Once `abandon` is set
        the checkpoint is no longer wanted: an object already uploaded is deleted instead of recorded."""

    def interrupted(self) -> bool:
        """True once the trial must stop early (SIGTERM, lease lost, study stopped): save and return."""


TrialStatus = Literal["complete", "pruned", "interrupted"]


@dataclass
class TrialOutcome:
    status: TrialStatus
    examples_seen: int
    value: float | None = None  # complete: full eval split score of the kept (best) state; pruned: last value
    metrics: dict[str, float] = field(default_factory=dict)  # full eval metrics of the kept state
    best_model_dir: Path | None = None  # complete: a folder SentenceTransformer(path) loads
    subset_value: float | None = None  # best value seen on the eval subset
