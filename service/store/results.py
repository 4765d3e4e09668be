"""A study's test-split score of the winner, written by workers (a job with a lease, taken by any free worker once
the study completes, again if that worker dies). The untrained baseline is a job of the same kind:
baseline_job.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.store.study_sql import json_number
from service.store.winner import winner_run_sql


@dataclass(frozen=True)
class Winner:
    number: int
    checkpoint_key: str
    checkpoint_sha256: str


@dataclass(frozen=True)
class ScoreJob:
    """A taken test-split job: score `winner` of `study_id`, then record under `token`."""

    study_id: str
    token: uuid.UUID
    winner: Winner


# A study has a test split when it names one, or splits one source with a test fraction.
# Read across every completed study at once: never a cast error, whatever a row holds.
_TEST_FRACTION = json_number("spec->'data'->'split'->'test_fraction'")
_HAS_TEST = f"(jsonb_typeof(spec->'data'->'test') = 'object' OR coalesce({_TEST_FRACTION}, 0) > 0)"
MAX_TEST_ATTEMPTS = 5
# No score yet, or one of an earlier winner.
_WAITING = "(test_value IS NULL OR test_rescore)"


def claim_test_split(factory: sessionmaker[Session], lease_seconds: float, study_id: str | None = None
                     ) -> ScoreJob | None:
    """Take a completed study's test-split job (that study's, or the oldest one waiting): None when there is
    none. A job is taken under a lease like a trial; a job whose worker died is taken again once the lease
    ran out, up to MAX_TEST_ATTEMPTS times. A study without a complete trial with a checkpoint has nothing to
    score: its job is closed."""
    token = uuid.uuid4()
    with session_scope(factory) as s:
        claimed = s.execute(text(f"""
            UPDATE studies SET test_lease_token = :token, test_attempts = test_attempts + 1,
                               test_lease_expires_at = now() + make_interval(secs => :ls)
            WHERE id = (SELECT id FROM studies
                        WHERE status = 'completed' AND {_WAITING} AND {_HAS_TEST}
                          AND test_attempts < :max
                          AND (test_lease_expires_at IS NULL OR test_lease_expires_at < now())
                          AND (CAST(:sid AS text) IS NULL OR id = :sid)
                        ORDER BY finished_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING id"""), {"token": token, "ls": lease_seconds, "max": MAX_TEST_ATTEMPTS, "sid": study_id}
        ).first()
        if claimed is None:
            return None
        row = s.execute(text(winner_run_sql("t.number, t.checkpoint_key, t.checkpoint_sha256")),
                        {"sid": claimed.id}).first()
        if row is None:
            s.execute(text("UPDATE studies SET test_attempts = :max, test_lease_token = NULL WHERE id = :sid"),
                      {"sid": claimed.id, "max": MAX_TEST_ATTEMPTS})
            return None
    return ScoreJob(claimed.id, token, Winner(row.number, row.checkpoint_key, row.checkpoint_sha256))


def renew_test_split(factory: sessionmaker[Session], job: ScoreJob, lease_seconds: float) -> bool:
    with session_scope(factory) as s:
        return s.execute(text("UPDATE studies SET test_lease_expires_at = now() + make_interval(secs => :ls) "
                              f"WHERE id = :sid AND test_lease_token = :token AND {_WAITING} RETURNING id"),
                         {"sid": job.study_id, "token": job.token, "ls": lease_seconds}).first() is not None


def record_test_value(factory: sessionmaker[Session], job: ScoreJob, metric: str, value: float) -> bool:
    """Record the score under the job's lease (False: another worker holds the job now, or it is done)."""
    with session_scope(factory) as s:
        return s.execute(text("UPDATE studies SET test_value = :v, test_metric = :metric, test_lease_expires_at = NULL, "
                              "test_trial_number = :number, test_rescore = false "
                              f"WHERE id = :sid AND test_lease_token = :token AND {_WAITING} RETURNING id"),
                         {"sid": job.study_id, "token": job.token, "v": value, "metric": metric,
                          "number": job.winner.number}).first() is not None


def awaiting_test_score(factory: sessionmaker[Session], study_id: str) -> bool:
    """Whether the study still waits for its test-split score (taken or not)."""
    with session_scope(factory) as s:
        return bool(s.execute(text(f"SELECT status = 'completed' AND {_WAITING} AND {_HAS_TEST} "
                                   "AND test_attempts < :max FROM studies WHERE id = :sid"),
                              {"sid": study_id, "max": MAX_TEST_ATTEMPTS}).scalar_one_or_none())
