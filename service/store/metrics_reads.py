"""What `GET /metrics` reports about the queue, read from our tables at scrape time.

Claims, lease expiries and reaps happen in workers and in every process that runs the reaper, so no process
could count them alone: each number here is derived from the tables in one snapshot, whichever process
did the work.

- Claims: a claim adds one to the trial's `attempts`; a give-back (`queue.release`: graceful shutdown, study
  stopped, transient fault) takes it back and appends a "given back" entry to the trial's `history`. So every
  claim ever made is `sum(attempts)` plus the give-back entries.
- Reaps: `queue.reap_expired` appends a "lease expired" entry to the history of each trial it takes back.
- Expired leases: running trials whose lease has run out and that no reaper has handled yet.

These are totals over the trials still in the database: they drop when a study is deleted, so they are exposed
as gauges, not counters. They are read from `trial_counts` (service/store/trial_counts.py: per-study sums that
triggers keep in the transaction of every trial change), never by scanning the trials or unpacking their
histories: a scrape costs a few rows per study, plus the running trials and the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.states import STUDY_STATUSES
from service.store import trial_counts
from service.store.db import session_scope

# Studies that still have trials to run or finish: the per-study series are limited to these.
OPEN_STUDIES = ("queued", "running", "paused")
# The `event` of the history entries that queue.reap_expired and queue.release append (counted per trial by the
# trigger of migration 0008_counts into trial_counts.reaps, given_back and given_back_fault).
REAPED_EVENT = "lease expired"
GIVEN_BACK_EVENT = "given back"  # a prefix: "given back (worker stopping)", "given back (study stopped)", ...


@dataclass(frozen=True)
class QueueSnapshot:
    trials_by_state: dict[str, int]
    # (study id, state) -> trials, for studies that are queued, running or paused
    open_study_trials: dict[tuple[str, str], int]
    studies_by_status: dict[str, int]
    claims: int
    give_backs: dict[str, int]  # cause ("requested": shutdown or study stopped; "fault") -> give-backs
    reaps: int
    leases_expired: int
    workers_alive: dict[str, int] = field(default_factory=dict)  # device -> workers
    examples_per_second: float = 0.0


# Running trials whose lease has run out: through the partial index ix_trials_lease (running trials only).
_LEASES_EXPIRED = text("SELECT count(*) FROM trials WHERE state = 'running' AND lease_expires_at < now()")

# Workers that are not stopped and whose heartbeat is younger than a lease (the workers view's "unresponsive"
# after that).
_WORKERS_ALIVE = text("""
    SELECT device, count(*) FROM workers
    WHERE status <> 'stopped' AND last_heartbeat_at > now() - make_interval(secs => :lease_seconds)
    GROUP BY device
""")

# A worker stores each running trial's ETA from its own measured rate since the attempt started, refreshed about
# every second (workers/hooks.py): remaining examples / ETA is that rate. Trials whose lease has expired are
# left out (their worker is gone or stalled).
_TRAINING_RATE = text("""
    SELECT coalesce(sum((planned_examples - examples_seen) / eta_seconds), 0) AS examples_per_second
    FROM trials
    WHERE state = 'running' AND lease_expires_at >= now()
      AND eta_seconds > 0 AND planned_examples > examples_seen
""")


def snapshot(factory: sessionmaker[Session], lease_seconds: float) -> QueueSnapshot:
    """Every queue number of /metrics, from one read-only transaction (one consistent snapshot)."""
    with session_scope(factory) as s:
        s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        by_state = trial_counts.by_state(s)
        per_study = trial_counts.by_study_state(s, OPEN_STUDIES)
        statuses = dict.fromkeys(STUDY_STATUSES, 0)
        statuses.update({status: int(n) for status, n in
                         s.execute(text("SELECT status, count(*) FROM studies GROUP BY status")).all()})
        sums = trial_counts.totals(s)
        leases_expired = int(s.execute(_LEASES_EXPIRED).scalar_one())
        alive = {device: int(n) for device, n in
                 s.execute(_WORKERS_ALIVE, {"lease_seconds": lease_seconds}).all()}
        rate = float(s.execute(_TRAINING_RATE).scalar_one())
    return QueueSnapshot(
        trials_by_state=by_state, open_study_trials=per_study, studies_by_status=statuses,
        claims=sums.attempts + sums.given_back + sums.given_back_fault,
        give_backs={"requested": sums.given_back, "fault": sums.given_back_fault},
        reaps=sums.reaps, leases_expired=leases_expired,
        workers_alive=alive, examples_per_second=rate,
    )
