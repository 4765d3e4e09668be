"""How a worker rides out faults: one `Outage` per dependency (the database, with Optuna's storage on the same
server, and the artifact store), shared by the loop, the training hooks and the heartbeat, so each outage is
logged once when it starts and once when it ends; and the retry policies that go with them."""

from __future__ import annotations

import logging

from service.artifacts.faults import transient_reason as storage_fault
from service.store.db import transient_reason as database_fault
from service.store.retry import GaveUp, Outage, Retry

log = logging.getLogger("stsweep.worker")

# A trial given back this many times because of transient faults (never counted in max_attempts) fails instead:
# a store that refuses every final checkpoint must not make workers retrain the same trial forever.
FAULT_GIVEBACKS_BEFORE_FAILING = 20


class Faults:
    def __init__(self) -> None:
        self.database = Outage("database", log)
        self.object_store = Outage("artifact store", log)
        self.db = Retry(self.database, database_fault, cap=5.0)  # our tables and Optuna's storage
        self.store = Retry(self.object_store, storage_fault, cap=15.0)


def transient(exc: BaseException) -> str | None:
    """Why `exc` is a transient fault (database, Optuna's storage, artifact store, or retries that gave up on
    one), None when it is a real failure of the trial."""
    if isinstance(exc, GaveUp):
        return f"{exc.what}: {exc.reason}"
    return database_fault(exc) or storage_fault(exc)


__all__ = ["FAULT_GIVEBACKS_BEFORE_FAILING", "Faults", "GaveUp", "transient"]
