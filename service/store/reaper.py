"""Expired leases back to the queue (or failed), Optuna told about trials that failed that way, and the
reconciler (service/store/reconcile.py) run beside it."""

from __future__ import annotations

import logging
import threading
import time

import optuna
from optuna.trial import TrialState

from service.context import Context
from service.store import queue
from service.store.db import transient_reason
from service.store.reconcile import Repairs, reconcile
from service.store.retry import Outage, Retry

log = logging.getLogger("stsweep.reaper")


def reap_once(ctx: Context) -> list[queue.Reaped]:
    reaped = queue.reap_expired(ctx.sessions)
    for r in reaped:
        log.warning("trial %s #%d: lease expired -> %s", r.study_id, r.number, r.state)
        if r.state == "failed" and r.optuna_trial_id is not None:
            fail_in_optuna(ctx.optuna_storage, r.optuna_trial_id)
    return reaped


def fail_in_optuna(storage: optuna.storages.BaseStorage, optuna_trial_id: int) -> None:
    try:
        storage.set_trial_state_values(optuna_trial_id, TrialState.FAIL)
    except (RuntimeError, KeyError, optuna.exceptions.UpdateFinishedTrialError):
        pass  # already finished or deleted: nothing to tell


class Maintenance:
    """The reaper every time it is asked, the reconciler at most every `reconcile_seconds`. A database outage
    is logged once (start and end), never per round; any other error is logged and the next round goes on."""

    def __init__(self, ctx: Context, reconcile_seconds: float, outage: Outage | None = None) -> None:
        self.ctx = ctx
        self.reconcile_seconds = reconcile_seconds
        self.retry = Retry(outage or Outage("database", log), transient_reason)
        self._last_reconcile = float("-inf")

    def run(self, *, force_reconcile: bool = False) -> Repairs | None:
        ok, _ = self.retry.once("reaper", reap_once, self.ctx)
        if not ok:
            return None
        now = time.monotonic()
        if not force_reconcile and now - self._last_reconcile < self.reconcile_seconds:
            return None
        self._last_reconcile = now
        _, repairs = self.retry.once("reconciler", reconcile, self.ctx)
        return repairs


class ReaperThread(threading.Thread):
    """Runs the reaper and the reconciler every `interval` seconds until stopped. Never dies of an error."""

    def __init__(self, ctx: Context, interval: float) -> None:
        super().__init__(name="stsweep-reaper", daemon=True)
        self.maintenance = Maintenance(ctx, interval)
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.maintenance.run()
            except Exception as exc:  # noqa: BLE001 - a reaper must outlive one bad round
                log.error("reaper round failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self.stop_event.set()
