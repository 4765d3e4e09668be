"""SIGTERM / SIGINT: the first asks for a graceful stop (checkpoint, give the trial back, exit within the
grace period); a second one exits at once. A second signal within SAME_REQUEST_SECONDS of the first is the same
request arriving twice (a batch scheduler signals every process of a job, and the supervisor passes it on too),
not an impatient user."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger("stsweep.worker")

SAME_REQUEST_SECONDS = 2.0


class ShutdownSignals:
    def __init__(self, grace_seconds: float) -> None:
        self.requested = threading.Event()
        self.grace_seconds = grace_seconds
        self._first = 0.0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set() and time.monotonic() - self._first < SAME_REQUEST_SECONDS:
            return
        if self.requested.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.warning("%s: finishing the current step, checkpointing and giving the trial back "
                    "(send again to exit at once)", signal.Signals(signum).name)
        self._first = time.monotonic()
        self.requested.set()
        # Never outlive the grace period, whatever the training step is doing.
        timer = threading.Timer(self.grace_seconds, self._expired, args=(signum,))
        timer.daemon = True
        timer.start()

    def _expired(self, signum: int) -> None:
        log.error("grace period of %.0f s over: exiting", self.grace_seconds)
        os._exit(128 + signum)
