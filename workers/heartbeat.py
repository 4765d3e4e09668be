"""The worker's heartbeat: a small thread the training loop cannot block (torch releases the GIL in its ops).

It renews the current trial's lease and learns whether the study still wants the trial; it never raises.
"""

from __future__ import annotations

import logging
import threading

from service.store import queue
from service.store.db import SessionFactory
from service.core.errors import LeaseLost, StsweepError

log = logging.getLogger("stsweep.worker")


class Heartbeat(threading.Thread):
    def __init__(self, sessions: SessionFactory, worker_id: int, interval: float, lease_seconds: float) -> None:
        super().__init__(name="stsweep-heartbeat", daemon=True)
        self.sessions = sessions
        self.worker_id = worker_id
        self.interval = interval
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lease: queue.Lease | None = None
        self.lease_lost = threading.Event()
        self.study_stopped = threading.Event()

    def watch(self, lease: queue.Lease | None) -> None:
        """Start (or stop, with None) renewing a trial's lease."""
        with self._lock:
            self._lease = lease
            self.lease_lost.clear()
            self.study_stopped.clear()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        with self._lock:
            lease = self._lease
        try:
            queue.worker_heartbeat(self.sessions, self.worker_id)
            if lease is None:
                return
            beat = queue.heartbeat(self.sessions, lease, self.lease_seconds)
            if not beat.keep_running:
                self.study_stopped.set()
        except LeaseLost:
            with self._lock:
                current = self._lease is lease  # not a trial that just ended while we were beating
            if current:
                log.warning("trial %s: lease lost; abandoning the attempt", lease.trial_id if lease else "?")
                self.lease_lost.set()
        except StsweepError as exc:
            log.warning("heartbeat failed: %s", exc.message)
        except Exception:  # noqa: BLE001 - the heartbeat must outlive a bad round (database restarting, ...)
            log.exception("heartbeat failed")

    def stop(self) -> None:
        self._stop.set()
