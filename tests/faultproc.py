"""A worker's bookkeeping without the training, for fault tests: claim a slot, sample its parameters as the
worker does (workers/sampling.py), report, finish and tell Optuna, and SIGKILL itself at a chosen step.

    python -m tests.faultproc DATABASE_URL SCENARIO [VALUE]

Scenarios: `ask-and-die` (dies right after the Optuna trial is created, before the slot records it),
`finish-and-die` (finishes the trial with us, dies before Optuna's tell), `prune-and-die` (the same, pruned),
`run` (the whole trial). Prints one JSON line: the claim and the parameters.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import optuna

from service.context import Context
from service.settings import Settings
from service.store import optuna_bridge, queue, studies
from service.store.db import transient_reason
from service.store.retry import Outage, Retry
from workers.sampling import trial_params


def main(url: str, scenario: str, value: float) -> int:
    settings = Settings(database_url=url, lease_seconds=30, heartbeat_seconds=1, _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, url)
    got = queue.claim(ctx.sessions, None, settings.lease_seconds)
    if got is None:
        print(json.dumps({"claimed": None}), flush=True)
        return 3
    claim, study_id = got
    spec, name, _ = studies.load_spec(ctx.sessions, study_id)
    study = optuna_bridge.load_study(ctx.optuna_storage, name, spec)
    if scenario == "ask-and-die":
        optuna_bridge.ask_for_slot(study, spec, claim.lease.trial_id, claim.number, claim.lease.token.hex)
        os.kill(os.getpid(), signal.SIGKILL)
    db = Retry(Outage("database", logging.getLogger("faultproc")), transient_reason)
    trial, params = trial_params(ctx.sessions, study, spec, claim, db)
    print(json.dumps({"number": claim.number, "attempt": claim.attempt, "params": params,
                      "optuna_trial_id": trial._trial_id}), flush=True)
    for step in (32, 64):
        stored = queue.report(ctx.sessions, claim.lease, step, value)
        optuna_bridge.report(study, trial._trial_id, step, stored.value)
    state = "pruned" if scenario == "prune-and-die" else "complete"
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state=state, value=value, examples_seen=64), 3)
    if scenario in ("finish-and-die", "prune-and-die"):
        os.kill(os.getpid(), signal.SIGKILL)
    if state == "complete":
        study.tell(trial, value)
    else:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.5))
