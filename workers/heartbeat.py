"""The worker's heartbeat: a small thread the training loop cannot block (torch releases the GIL in its ops).

It renews the current trial's lease (and the lease of the study job being run: a test-split score or a
baseline) and learns whether the study still wants the trial; it never raises. During a database outage each
beat tries once: the outage is logged once by the worker's shared `Outage`, and the lease is renewed by the
first beat after it, if it has not expired by then (the database's clock decides); if it has, the trial is
abandoned (`lease_lost`).
"""

from __future__ import annotations

import logging
import threading

from service.core.errors import LeaseLost
from service.store import baseline_job, queue, results
from service.store.db import SessionFactory
from service.store.retry import Retry

log = logging.getLogger("stsweep.worker")

StudyJob = results.ScoreJob | baseline_job.BaselineJob


class Heartbeat(threading.Thread):
    def __init__(self, sessions: SessionFactory, worker_id: int, interval: float, lease_seconds: float,
                 retry: Retry) -> None:
        super().__init__(name="stsweep-heartbeat", daemon=True)
        self.sessions = sessions
        self.worker_id = worker_id
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.retry = retry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lease: queue.Lease | None = None
        self._job: StudyJob | None = None
        self.lease_lost = threading.Event()
        self.study_stopped = threading.Event()

    def watch(self, lease: queue.Lease | None) -> None:
        """Start (or stop, with None) renewing a trial's lease."""
        with self._lock:
            self._lease = lease
            self.lease_lost.clear()
            self.study_stopped.clear()

    def watch_job(self, job: StudyJob | None) -> None:
        """Start (or stop, with None) renewing a study job's lease (a test-split score or a baseline)."""
        with self._lock:
            self._job = job

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        with self._lock:
            lease, job = self._lease, self._job
        try:
            ok, _ = self.retry.once("worker heartbeat", queue.worker_heartbeat, self.sessions, self.worker_id)
            if not ok:
                return
            if lease is not None:
                self._renew(lease)
            if isinstance(job, results.ScoreJob):
                self.retry.once("test-split heartbeat", results.renew_test_split, self.sessions, job,
                                self.lease_seconds)
            elif isinstance(job, baseline_job.BaselineJob):
                self.retry.once("baseline heartbeat", baseline_job.renew_baseline, self.sessions, job,
                                self.lease_seconds)
        except Exception:  # noqa: BLE001 - the heartbeat must outlive a bad round
            log.exception("heartbeat failed")

    def _renew(self, lease: queue.Lease) -> None:
        try:
            ok, beat = self.retry.once("heartbeat", queue.heartbeat, self.sessions, lease, self.lease_seconds)
        except LeaseLost:
            with self._lock:
                current = self._lease is lease  # not a trial that just ended while we were beating
            if current and not self.lease_lost.is_set():
                log.warning("trial %s: lease lost; abandoning the attempt", lease.trial_id)
                self.lease_lost.set()
            return
        if ok and beat is not None and not beat.keep_running:
            self.study_stopped.set()

    def stop(self) -> None:
        self._stop.set()
