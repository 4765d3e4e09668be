"""A claimed slot's Optuna trial and parameters (no torch here: test processes that race on sampling use it).

A new attempt of a trial keeps its parameters and its Optuna trial. A slot without an Optuna trial first looks
for one an earlier attempt created for it and never recorded (it takes that one back, with its enqueued
configuration), and otherwise creates one, tagged with the slot and the lease, its sampler seeded for the slot
(see service/store/optuna_bridge.py). The Optuna trial is recorded on the slot before any parameter is sampled.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna

from service.core.spec import StudySpec
from service.store import optuna_bridge, queue
from service.store.db import SessionFactory
from service.store.retry import Retry


def trial_params(sessions: SessionFactory, study: optuna.Study, spec: StudySpec, claim: queue.Claim, db: Retry,
                 stop: threading.Event | None = None) -> tuple[optuna.trial.Trial, dict[str, Any]]:
    """(Optuna trial, parameters) for the claimed slot; every call retried through database outages."""
    number, lease = claim.number, claim.lease
    if claim.optuna_trial_id is not None:
        trial = db.call("Optuna trial", optuna_bridge.trial_for, study, spec, claim.optuna_trial_id, number, stop=stop)
        if claim.params is not None:
            return trial, claim.params
    else:
        db.call("lease", queue.check_lease, sessions, lease, stop=stop)  # no Optuna trial for a stale attempt
        left = db.call("Optuna trial", optuna_bridge.tagged_trials, study, lease.trial_id, stop=stop)
        if left:
            trial = db.call("Optuna trial", optuna_bridge.trial_for, study, spec, left[0], number, stop=stop)
        else:
            trial = db.call("Optuna ask", optuna_bridge.ask_for_slot, study, spec, lease.trial_id, number,
                            lease.token.hex, claim.search_index, stop=stop)
        recorded = db.call("record Optuna trial", queue.attach_optuna_trial, sessions, lease, trial._trial_id,
                           stop=stop)
        if recorded != trial._trial_id:  # the slot got one meanwhile (the reconciler gave its orphan back)
            trial = db.call("Optuna trial", optuna_bridge.trial_for, study, spec, recorded, number, stop=stop)
    params = db.call("sample", optuna_bridge.sample_params, trial, spec, stop=stop)
    db.call("record parameters", queue.set_params, sessions, lease, params, trial._trial_id, stop=stop)
    return trial, params
