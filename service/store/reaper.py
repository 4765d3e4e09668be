"""Expired leases back to the queue (or failed), and Optuna told about trials that failed that way."""

from __future__ import annotations

import logging
import threading

import optuna
from optuna.trial import TrialState

from service.store import queue
from service.context import Context
from service.core.errors import StsweepError

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


class ReaperThread(threading.Thread):
    """Runs the reaper every `interval` seconds until stopped. Errors are logged, never fatal."""

    def __init__(self, ctx: Context, interval: float) -> None:
        super().__init__(name="stsweep-reaper", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                reap_once(self.ctx)
            except StsweepError as exc:
                log.warning("reaper: %s", exc.message)
            except Exception:  # noqa: BLE001 - a reaper must outlive one bad round
                log.exception("reaper round failed")

    def stop(self) -> None:
        self.stop_event.set()
