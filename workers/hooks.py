"""The loop's side of the trainer contract: intermediate values to our tables and to Optuna, progress,
resumable checkpoints to the artifact store, and the reasons to stop early."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna

from service.store import queue
from service.context import Context
from service.core.errors import LeaseLost
from workers.heartbeat import Heartbeat
from workers.signals import ShutdownSignals

log = logging.getLogger("stsweep.worker")

PROGRESS_EVERY_SECONDS = 1.0


class LoopHooks:
    def __init__(self, ctx: Context, lease: queue.Lease, trial: optuna.trial.Trial, key_prefix: str,
                 heartbeat: Heartbeat, signals: ShutdownSignals) -> None:
        self.ctx = ctx
        self.lease = lease
        self.trial = trial
        self.key_prefix = key_prefix
        self.heartbeat = heartbeat
        self.signals = signals
        self.started = time.monotonic()
        self.started_examples: int | None = None
        self.last_checkpoint = time.monotonic()
        self.last_progress = 0.0
        self.lost = False

    # -------------------------------------------------------------- TrialHooks

    def report(self, examples_seen: int, value: float) -> bool:
        try:
            new = queue.report(self.ctx.sessions, self.lease, examples_seen, value)
        except LeaseLost:
            self.lost = True
            return False
        if new:
            # A resumed attempt re-reaching an old point keeps the first value, in our tables and in Optuna.
            self.trial.report(value, examples_seen)
        return self.trial.should_prune()

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        now = time.monotonic()
        if self.started_examples is None:
            self.started_examples = examples_seen
        if now - self.last_progress < PROGRESS_EVERY_SECONDS and examples_seen < planned_examples:
            return
        self.last_progress = now
        done = examples_seen - self.started_examples
        rate = done / (now - self.started) if done > 0 else None
        eta = (planned_examples - examples_seen) / rate if rate else None
        try:
            queue.progress(self.ctx.sessions, self.lease, examples_seen, planned_examples, eta)
        except LeaseLost:
            self.lost = True

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_checkpoint >= self.ctx.settings.checkpoint_every_seconds

    def save_checkpoint(self, folder: Path, examples_seen: int) -> None:
        if self.lost:
            return
        info = self.ctx.artifacts.put_dir(f"{self.key_prefix}/resume-{examples_seen}.tar", folder)
        try:
            replaced = queue.record_resume_checkpoint(self.ctx.sessions, self.lease, info.key, info.sha256,
                                                      examples_seen)
        except LeaseLost:
            self.lost = True
            self.ctx.artifacts.delete(info.key)
            return
        if replaced:
            self.ctx.artifacts.delete(replaced)
        self.last_checkpoint = time.monotonic()
        log.info("trial %s: resumable checkpoint at %d examples", self.key_prefix, examples_seen)

    def interrupted(self) -> bool:
        return (self.lost or self.signals.requested.is_set() or self.heartbeat.lease_lost.is_set()
                or self.heartbeat.study_stopped.is_set())

    @property
    def lease_gone(self) -> bool:
        return self.lost or self.heartbeat.lease_lost.is_set()
