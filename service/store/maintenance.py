"""The deployment's maintenance: the reaper (service/store/reaper.py) and the reconciler
(service/store/reconcile.py), run by one elected process at a time, in a background thread of the API and of
every worker, never in a claim path.

Every `interval` seconds each process's thread asks for the `maintenance` lease (service/store/election.py,
held for `lease_seconds(interval)`); the holder runs a round (reap, then reconcile, renewing the lease before each
study it reconciles) and the others do nothing. A holder that dies stops renewing, and another process takes
the job over once the lease ran out; one that stops cleanly gives it up at once. A worker's claims never wait on
a round: the round runs in its own thread, on short transactions of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from service.context import Context
from service.store import election
from service.store.db import transient_reason
from service.store.queue import Reaped
from service.store.reaper import reap_once
from service.store.reconcile import Repairs, reconcile
from service.store.retry import Outage, Retry

log = logging.getLogger("stsweep.maintenance")


def lease_seconds(interval: float) -> float:
    """How long a round's lease holds: three rounds, so a holder that died is replaced within ~3 intervals
    (45 s at the default 15 s: within the default trial lease of 60 s)."""
    return 3 * interval


@dataclass
class Round:
    """What one round did (the holder's), for logs and tests."""

    reaped: list[Reaped] = field(default_factory=list)
    repairs: Repairs | None = None
    seconds: float = 0.0


class Maintenance:
    """One process's side of the election. `run()` is one try: a round when this process holds (or takes) the
    lease, else None. A database outage is logged once (start and end), never per round."""

    def __init__(self, ctx: Context, interval: float, outage: Outage | None = None,
                 holder: str | None = None) -> None:
        self.ctx = ctx
        self.interval = interval
        self.holder = holder or election.holder_name()
        self.lease_seconds = lease_seconds(interval)
        self.retry = Retry(outage or Outage("database", log), transient_reason)

    def run(self) -> Round | None:
        ok, mine = self.retry.once("maintenance lease", election.take, self.ctx.sessions, self.holder,
                                   self.lease_seconds)
        if not ok or not mine:
            return None
        started = time.monotonic()
        done = self.work()
        if done is None:
            return None
        done.seconds = time.monotonic() - started
        self.retry.once("maintenance lease", election.finished_round, self.ctx.sessions, self.holder)
        return done

    def work(self) -> Round | None:
        """The round itself (the lease is held): reap, then reconcile what was marked since the last round."""
        ok, reaped = self.retry.once("reaper", reap_once, self.ctx)
        if not ok:
            return None
        ok, repairs = self.retry.once("reconciler", reconcile, self.ctx, keep_going=self.still_holder)
        return Round(reaped or [], repairs if ok else None)

    def still_holder(self) -> bool:
        """Renew the lease; False once it was lost (the round stops: someone else may run one now)."""
        ok, mine = self.retry.once("maintenance lease", election.renew, self.ctx.sessions, self.holder,
                                   self.lease_seconds)
        return bool(ok and mine)

    def release(self) -> None:
        try:
            self.retry.once("maintenance lease", election.release, self.ctx.sessions, self.holder)
        except Exception as exc:  # noqa: BLE001 - the lease then simply runs out
            log.warning("maintenance lease not given up (%s: %s); it runs out by itself", type(exc).__name__, exc)


class MaintenanceThread(threading.Thread):
    """Runs `Maintenance` every `interval` seconds (the first try `first_after` seconds after it starts: one
    interval by default) until stopped; gives the lease up when it stops. Never dies of an error."""

    def __init__(self, ctx: Context, interval: float, outage: Outage | None = None,
                 maintenance: Maintenance | None = None, first_after: float | None = None) -> None:
        super().__init__(name="stsweep-maintenance", daemon=True)
        self.maintenance = maintenance or Maintenance(ctx, interval, outage)
        self.interval = interval
        self.first_after = interval if first_after is None else first_after
        self.stop_event = threading.Event()

    def run(self) -> None:
        wait = self.first_after
        while not self.stop_event.wait(wait):
            try:
                self.maintenance.run()
            except Exception as exc:  # noqa: BLE001 - maintenance must outlive one bad round
                log.error("maintenance round failed: %s: %s", type(exc).__name__, exc)
            wait = self.interval
        self.maintenance.release()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop; with `timeout`, wait that long for it (and its lease's release)."""
        self.stop_event.set()
        if timeout is not None and self.is_alive():
            self.join(timeout)
