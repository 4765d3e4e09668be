"""The loop's side of the trainer contract: intermediate values to our tables and to Optuna, progress,
resumable checkpoints to the artifact store, and the reasons to stop early.

Faults: an evaluation point waits for the database (the pruner's decision needs it), so training never runs
ahead of what it could report; progress is best-effort and never waits; a resumable checkpoint the artifact
store refuses (disk full, S3 down) past its retries is skipped, and the next one is tried when due. Every object
is written under this attempt's own folder (`key_prefix`, per lease), and only those are ever deleted here.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import optuna

from service.context import Context
from service.core.errors import LeaseLost
from service.store import optuna_bridge, queue
from workers.faults import Faults, GaveUp
from workers.heartbeat import Heartbeat
from workers.signals import ShutdownSignals

log = logging.getLogger("stsweep.worker")

PROGRESS_EVERY_SECONDS = 1.0
PROGRESS_DURING_OUTAGE_SECONDS = 10.0  # while the database is down, try progress writes this seldom


class LoopHooks:
    def __init__(self, ctx: Context, lease: queue.Lease, trial: optuna.trial.Trial | None, study: optuna.Study,
                 key_prefix: str, heartbeat: Heartbeat, signals: ShutdownSignals, faults: Faults) -> None:
        self.ctx = ctx
        self.lease = lease
        self.trial = trial
        self.study = study
        self.key_prefix = key_prefix
        self.heartbeat = heartbeat
        self.signals = signals
        self.faults = faults
        self.started = time.monotonic()
        self.started_examples: int | None = None
        self.last_progress = 0.0
        self.lost = False
        self.cut_off = False  # asked to stop while waiting for the database
        self.planned_sent = False  # the trial's planned examples were given to Optuna

    # -------------------------------------------------------------- TrialHooks

    def report(self, examples_seen: int, value: float) -> bool:
        if self.lost:
            return False
        db, stop = self.faults.db, self.signals.requested
        try:
            stored = db.call("report", queue.report, self.ctx.sessions, self.lease, examples_seen, value, stop=stop)
            if self.trial is None:
                return False  # a confirm run: recorded with us only, never shown to Optuna, never pruned
            # Optuna gets the value our table holds at that point (the first one reported there), so a resumed
            # attempt, or a retry, never changes what the pruner compares.
            db.call("Optuna report", optuna_bridge.report, self.study, self.trial._trial_id, examples_seen,
                    stored.value, stop=stop)
            return db.call("pruner", optuna_bridge.should_prune, self.study, self.trial._trial_id, stop=stop)
        except LeaseLost:
            self.lost = True
            return False
        except GaveUp:
            self.cut_off = True  # shutting down during an outage: stop training, the lease will expire
            return False

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        now = time.monotonic()
        if self.started_examples is None:
            self.started_examples = examples_seen
        if not self.planned_sent and planned_examples > 0 and not self.lost:
            self._send_planned(planned_examples)
        every = PROGRESS_DURING_OUTAGE_SECONDS if self.faults.database.down else PROGRESS_EVERY_SECONDS
        if now - self.last_progress < every and examples_seen < planned_examples:
            return
        self.last_progress = now
        done = examples_seen - self.started_examples
        rate = done / (now - self.started) if done > 0 else None
        eta = (planned_examples - examples_seen) / rate if rate else None
        try:
            self.faults.db.once("progress", queue.progress, self.ctx.sessions, self.lease, examples_seen,
                                planned_examples, eta)
        except LeaseLost:
            self.lost = True

    def _send_planned(self, planned_examples: int) -> None:
        """The trial's planned examples to Optuna (a user attr), once, before its first report: the
        schedule-fraction pruner (`pruner.compare_at: schedule_fraction`) compares trials at e / planned."""
        if self.trial is None:  # a confirm run has no Optuna trial
            self.planned_sent = True
            return
        try:
            self.faults.db.call("planned examples", optuna_bridge.set_planned_examples, self.study,
                                self.trial._trial_id, planned_examples, stop=self.signals.requested)
            self.planned_sent = True
        except GaveUp:
            self.cut_off = True  # shutting down during an outage: stop training, the lease will expire

    def checkpoint_interval(self) -> float:
        return self.ctx.settings.checkpoint_every_seconds

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event) -> None:
        """Upload (verified: the store hashes what it wrote), then record under the lease; on the writer thread.
        A checkpoint abandoned meanwhile, or refused by the lease, is deleted, never recorded."""
        if self.lost:
            return
        key = f"{self.key_prefix}/resume-{examples_seen}.tar"
        started = time.monotonic()
        deadline = started + self.ctx.settings.fault_retry_seconds
        # Retries of a store that refuses it end when the worker is stopping, or when it is abandoned (the trial
        # ended, or an interruption's newer checkpoint replaces it).
        stop = self.signals.requested if self.signals.requested.is_set() else abandon
        try:
            info = self.faults.store.call("resumable checkpoint", self.ctx.artifacts.put_dir, key, folder,
                                          deadline=deadline, stop=stop)
        except GaveUp as exc:
            log.warning("trial %s: resumable checkpoint at %d examples skipped (%s); the next one is tried when "
                        "due", self.key_prefix, examples_seen, exc.reason)
            return
        if abandon.is_set():
            self._delete_own(info.key)  # never recorded: nobody else can know it
            log.debug("trial %s: resumable checkpoint at %d examples abandoned after its upload", self.key_prefix,
                      examples_seen)
            return
        try:
            replaced = self.faults.db.call("record checkpoint", queue.record_resume_checkpoint, self.ctx.sessions,
                                           self.lease, info.key, info.sha256, examples_seen,
                                           stop=self.signals.requested)
        except LeaseLost:
            self.lost = True
            self._delete_own(info.key)  # never recorded: nobody else can know it
            return
        except GaveUp:
            return  # maybe recorded, maybe not: the orphan collector decides from the row
        if replaced and replaced.startswith(f"{self.key_prefix}/"):
            self._delete_own(replaced)  # an earlier attempt's is left to the orphan collector
        log.info("trial %s: resumable checkpoint at %d examples (%.0f MiB, %.1f s; uploaded and recorded beside "
                 "training)", self.key_prefix, examples_seen, info.size / 2**20, time.monotonic() - started)

    def _delete_own(self, key: str) -> None:
        assert key.startswith(f"{self.key_prefix}/"), key
        self.faults.store.once("delete", self.ctx.artifacts.delete, key)

    def interrupted(self) -> bool:
        return (self.lost or self.cut_off or self.signals.requested.is_set() or self.heartbeat.lease_lost.is_set()
                or self.heartbeat.study_stopped.is_set())

    @property
    def lease_gone(self) -> bool:
        return self.lost or self.heartbeat.lease_lost.is_set()
