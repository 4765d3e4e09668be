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

Totals name no study and no project: they are what a scrape without a token gets. The per-project and per-study
numbers are read only when asked for (`Series`), and only for the projects asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.states import STUDY_STATUSES, TRIAL_STATES
from service.store import trial_counts
from service.store.db import session_scope

# Studies that still have trials to run or finish: the per-study series are limited to these.
OPEN_STUDIES = ("queued", "running", "paused")
# The `event` of the history entries that queue.reap_expired and queue.release append (counted per trial by the
# trigger of migration 0008_counts into trial_counts.reaps, given_back and given_back_fault).
REAPED_EVENT = "lease expired"
GIVEN_BACK_EVENT = "given back"  # a prefix: "given back (worker stopping)", "given back (study stopped)", ...


@dataclass(frozen=True)
class Series:
    """Which per-project and per-study numbers a snapshot holds: those of `project`; None: every project's."""

    project: str | None


@dataclass(frozen=True)
class QueueSnapshot:
    trials_by_state: dict[str, int]
    studies_by_status: dict[str, int]
    claims: int
    give_backs: dict[str, int]  # cause ("requested": shutdown or study stopped; "fault") -> give-backs
    reaps: int
    leases_expired: int
    workers_alive: dict[str, int] = field(default_factory=dict)  # device -> workers
    examples_per_second: float = 0.0
    # Only with `Series` (empty otherwise), for its projects:
    # (project, study id, state) -> trials, for studies that are queued, running or paused (states with none left out)
    open_study_trials: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (project, state) -> trials and (project, status) -> studies: every state and status of every project, zeros too
    project_trials: dict[tuple[str, str], int] = field(default_factory=dict)
    project_studies: dict[tuple[str, str], int] = field(default_factory=dict)


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


def snapshot(factory: sessionmaker[Session], lease_seconds: float, series: Series | None = None) -> QueueSnapshot:
    """Every queue number of /metrics, from one read-only transaction (one consistent snapshot): the totals, and
    with `series` the per-project and per-study numbers of its projects."""
    with session_scope(factory) as s:
        s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        by_state = trial_counts.by_state(s)
        per_project = _per_project(s, series) if series is not None else {}
        statuses = dict.fromkeys(STUDY_STATUSES, 0)
        statuses.update({status: int(n) for status, n in
                         s.execute(text("SELECT status, count(*) FROM studies GROUP BY status")).all()})
        sums = trial_counts.totals(s)
        leases_expired = int(s.execute(_LEASES_EXPIRED).scalar_one())
        alive = {device: int(n) for device, n in
                 s.execute(_WORKERS_ALIVE, {"lease_seconds": lease_seconds}).all()}
        rate = float(s.execute(_TRAINING_RATE).scalar_one())
    return QueueSnapshot(
        trials_by_state=by_state, studies_by_status=statuses,
        claims=sums.attempts + sums.given_back + sums.given_back_fault,
        give_backs={"requested": sums.given_back, "fault": sums.given_back_fault},
        reaps=sums.reaps, leases_expired=leases_expired,
        workers_alive=alive, examples_per_second=rate, **per_project,
    )


def _per_project(s: Session, series: Series) -> dict[str, Any]:
    """The QueueSnapshot fields that name projects and studies, for `series`' projects (that exist)."""
    only = series.project
    names = [name for (name,) in s.execute(
        text("SELECT name FROM projects WHERE CAST(:p AS text) IS NULL OR name = :p ORDER BY name"), {"p": only})]
    trials = {(p, state): 0 for p in names for state in TRIAL_STATES}
    trials.update(trial_counts.by_project_state(s, only))
    studies = {(p, status): 0 for p in names for status in STUDY_STATUSES}
    studies.update({(p, status): int(n) for p, status, n in s.execute(text(
        "SELECT project, status, count(*) FROM studies WHERE CAST(:p AS text) IS NULL OR project = :p "
        "GROUP BY project, status"), {"p": only}).all()})
    return {"open_study_trials": trial_counts.by_study_state(s, OPEN_STUDIES, only),
            "project_trials": trials, "project_studies": studies}
