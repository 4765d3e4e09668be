"""A study's untrained baseline, as a job with a lease (like the test split in results.py).

The baseline (the base model scored on the eval subset and the full eval split, untrained) is computed once per
study, by one worker, and never before a lone worker's first trial: a worker takes its study's job right after
finishing a trial, or any started study's job when it is idle with nothing to claim. The job is taken under a
token with a lease renewed by the worker's heartbeat, recorded only under that token, and taken again only once
the lease ran out (the worker died), at most MAX_BASELINE_ATTEMPTS times (a baseline whose computation keeps
failing, e.g. a data error, does not loop forever: the study's `baseline.status` then says "failed"). Paused
and failed studies have no job: pausing stops every kind of work.

Trials that finish before the baseline lands get `below_baseline` when it is recorded; `mark_trial` (called by
the trial's finish, share-locking the study row while a baseline job is taken and not recorded) and
`record_baseline` (which writes the study row first, then the trials, in later statements) meet on that lock, so
a trial finishing while the baseline lands is never missed by both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope

MAX_BASELINE_ATTEMPTS = 3

# Whether complete trial `t` ended below its study `st`'s baseline (NULL while the baseline is unknown).
_BELOW_BASELINE_SQL = """CASE WHEN st.baseline_value IS NULL OR t.value IS NULL THEN NULL
                             WHEN st.direction = 'maximize' THEN t.value < st.baseline_value
                             ELSE t.value > st.baseline_value END"""


@dataclass(frozen=True)
class BaselineJob:
    """A taken baseline job: compute `study_id`'s baseline, then record it under `token`."""

    study_id: str
    token: uuid.UUID


def claim_baseline(factory: sessionmaker[Session], lease_seconds: float, study_id: str | None = None
                   ) -> BaselineJob | None:
    """Take the baseline job of `study_id` (or, with None, of the oldest started study still waiting for one):
    None when there is none. Only started studies have a job (a trial was claimed), so the baseline never
    runs before a study's first trial. A paused study waits (its job comes back with it) and a failed one has
    none. An idle worker skips study rows locked at that moment; a worker that
    just finished a trial of `study_id` waits for its row instead (a finish or a status change holds it briefly),
    so a lone worker never passes its study's job by."""
    token = uuid.uuid4()
    lock = "FOR UPDATE SKIP LOCKED" if study_id is None else "FOR UPDATE"
    with session_scope(factory) as s:
        claimed = s.execute(text(f"""
            UPDATE studies SET baseline_lease_token = :token, baseline_attempts = baseline_attempts + 1,
                               baseline_lease_expires_at = now() + make_interval(secs => :ls)
            WHERE id = (SELECT id FROM studies
                        WHERE baseline_value IS NULL AND started_at IS NOT NULL AND baseline_attempts < :max
                          AND status IN ('running', 'completed', 'stopped')
                          AND (baseline_lease_expires_at IS NULL OR baseline_lease_expires_at < now())
                          AND (CAST(:sid AS text) IS NULL OR id = :sid)
                        ORDER BY started_at, id LIMIT 1 {lock})
            RETURNING id"""), {"token": token, "ls": lease_seconds, "max": MAX_BASELINE_ATTEMPTS, "sid": study_id}
        ).first()
    return BaselineJob(claimed.id, token) if claimed is not None else None


def renew_baseline(factory: sessionmaker[Session], job: BaselineJob, lease_seconds: float) -> bool:
    with session_scope(factory) as s:
        return s.execute(text("UPDATE studies SET baseline_lease_expires_at = now() + make_interval(secs => :ls) "
                              "WHERE id = :sid AND baseline_lease_token = :token AND baseline_value IS NULL "
                              "RETURNING id"),
                         {"sid": job.study_id, "token": job.token, "ls": lease_seconds}).first() is not None


def record_baseline(factory: sessionmaker[Session], job: BaselineJob, full_value: float, subset_value: float
                    ) -> bool:
    """Record the baseline under the job's token (False: another worker holds the job now, or it is done), and
    flag the study's complete trials that finished before it landed."""
    with session_scope(factory) as s:
        recorded = s.execute(text("""
            UPDATE studies SET baseline_value = :full, baseline_subset_value = :subset,
                               baseline_recorded_at = now(), baseline_lease_expires_at = NULL
            WHERE id = :sid AND baseline_lease_token = :token AND baseline_value IS NULL RETURNING id"""),
            {"sid": job.study_id, "token": job.token, "full": full_value, "subset": subset_value}).first()
        if recorded is None:
            return False
        # A later statement: its snapshot sees every trial whose finish held the study row before us.
        s.execute(text(f"""UPDATE trials t SET below_baseline = {_BELOW_BASELINE_SQL} FROM studies st
                           WHERE st.id = t.study_id AND t.study_id = :sid AND t.state = 'complete'
                             AND t.below_baseline IS NULL"""), {"sid": job.study_id})
    return True


def mark_trial(s: Session, trial_id: int) -> None:
    """Set a just-completed trial's `below_baseline` from its study's baseline, if known. Called in the
    finish's transaction, after the trial's own update. While the study's baseline job is taken but not
    recorded, the study row is share-locked first (waiting out a `record_baseline` in flight, or making it wait
    for this finish), so a baseline recorded meanwhile is seen; otherwise no study lock is taken (a claim never
    waits on a finish)."""
    s.execute(text("""SELECT 1 FROM studies st JOIN trials t ON t.study_id = st.id
                      WHERE t.id = :tid AND t.state = 'complete' AND st.baseline_value IS NULL
                        AND st.baseline_lease_token IS NOT NULL
                      FOR SHARE OF st"""), {"tid": trial_id})
    s.execute(text(f"""UPDATE trials t SET below_baseline = {_BELOW_BASELINE_SQL} FROM studies st
                       WHERE t.id = :tid AND st.id = t.study_id AND t.state = 'complete'"""), {"tid": trial_id})
