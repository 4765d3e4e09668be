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
as gauges, not counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.states import STUDY_STATUSES, TRIAL_STATES
from service.store.db import session_scope

# Studies that still have trials to run or finish: the per-study series are limited to these.
OPEN_STUDIES = "('queued', 'running', 'paused')"
# The `event` of the history entries that queue.reap_expired and queue.release append.
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


_ATTEMPTS = text("""
    SELECT coalesce(sum(attempts), 0) AS attempts,
           count(*) FILTER (WHERE state = 'running' AND lease_expires_at < now()) AS leases_expired
    FROM trials
""")

_HISTORY = text("""
    SELECT count(*) FILTER (WHERE h->>'event' = :reaped) AS reaps,
           count(*) FILTER (WHERE starts_with(h->>'event', :given_back) AND h->>'fault' IS NULL) AS requested,
           count(*) FILTER (WHERE starts_with(h->>'event', :given_back) AND h->>'fault' IS NOT NULL) AS faults
    FROM trials t CROSS JOIN LATERAL jsonb_array_elements(t.history) AS h
    WHERE t.history <> '[]'::jsonb
""")

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
        by_state = dict.fromkeys(TRIAL_STATES, 0)
        by_state.update({state: int(n) for state, n in
                         s.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all()})
        per_study = {(sid, state): int(n) for sid, state, n in s.execute(text(f"""
            SELECT t.study_id, t.state, count(*) FROM trials t JOIN studies st ON st.id = t.study_id
            WHERE st.status IN {OPEN_STUDIES} GROUP BY t.study_id, t.state""")).all()}
        statuses = dict.fromkeys(STUDY_STATUSES, 0)
        statuses.update({status: int(n) for status, n in
                         s.execute(text("SELECT status, count(*) FROM studies GROUP BY status")).all()})
        counts = s.execute(_ATTEMPTS).one()
        history = s.execute(_HISTORY, {"reaped": REAPED_EVENT, "given_back": GIVEN_BACK_EVENT}).one()
        alive = {device: int(n) for device, n in
                 s.execute(_WORKERS_ALIVE, {"lease_seconds": lease_seconds}).all()}
        rate = float(s.execute(_TRAINING_RATE).scalar_one())
    return QueueSnapshot(
        trials_by_state=by_state, open_study_trials=per_study, studies_by_status=statuses,
        claims=int(counts.attempts) + int(history.requested) + int(history.faults),
        give_backs={"requested": int(history.requested), "fault": int(history.faults)},
        reaps=int(history.reaps), leases_expired=int(counts.leases_expired),
        workers_alive=alive, examples_per_second=rate,
    )
