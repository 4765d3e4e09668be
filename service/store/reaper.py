"""Expired leases back to the queue (or failed), and Optuna told about trials that failed that way. Run by the
elected maintenance round (service/store/maintenance.py), beside the reconciler. The expired leases are found
through the partial index `ix_trials_lease` (running trials only): a round costs O(what is stale)."""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from service.context import Context
from service.store import queue
from service.store.db import session_scope
from service.store.reconcile import mark_later

log = logging.getLogger("stsweep.reaper")


def reap_once(ctx: Context) -> list[queue.Reaped]:
    """One reaper pass. Each attempt taken back is marked for the reconciler at once (by the trials' trigger,
    in the reap's own transaction) and once more after the orphan grace, for what a stale attempt that was
    still writing may upload after the reap."""
    reaped = queue.reap_expired(ctx.sessions)
    if reaped:
        with session_scope(ctx.sessions) as s:
            for r in reaped:
                mark_later(s, r.study_id, r.trial_id, 2 * ctx.settings.lease_seconds)
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
