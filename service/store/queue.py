"""The trial queue: every SQL statement that moves a trial between states lives here.

A trial slot is claimed in one short transaction (`FOR UPDATE SKIP LOCKED`); the claimant then holds a lease
(`lease_token`, renewed by heartbeats). Every later write is guarded by that token, by `state = 'running'` and
by the lease not having expired, and says whether it won: once the lease ran out, the old attempt's writes change
nothing. All times come from the database clock (`now()`), never a worker's. Every write may be retried after a
lost connection (the worker does, through an outage): each is idempotent, or recognises its own earlier commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session, sessionmaker

from service.store import baseline_job, fair_share, lifecycle, quarantine, quotas, study_check
from service.store.db import session_scope
from service.store.lifecycle import ACTIVE_STUDY
from service.core.errors import CorruptStudy, LeaseLost
from service.core.scheduler import SchedulerJob
from service.store.ranking import RANK_KEY_SQL
from service.store.study_sql import CHECKED_COLUMNS, COLUMNS_OK_SQL, TIMED_OUT_SQL

@dataclass(frozen=True)
class Lease:
    trial_id: int
    token: uuid.UUID


@dataclass(frozen=True)
class Claim:
    lease: Lease
    study_id: str
    number: int
    attempt: int
    params: dict[str, Any] | None
    optuna_trial_id: int | None
    resume_key: str | None
    resume_sha256: str | None
    resume_examples: int | None = None
    fault_count: int = 0  # give-backs after transient faults so far (never counted in `attempt`)
    kind: str = "search"  # 'confirm': a repeat of a configuration, with `params` fixed and no Optuna trial
    train_seed: int | None = None  # the training seed (None: the study's)
    search_index: int | None = None  # a search slot's index among the study's search slots (enqueue_trials[i])


@dataclass(frozen=True)
class Reaped:
    trial_id: int
    study_id: str
    number: int
    state: str  # 'queued' (another attempt follows) or 'failed' (attempts used up)
    optuna_trial_id: int | None


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learns: whether the study still wants this trial to run."""

    study_status: str

    @property
    def keep_running(self) -> bool:
        return self.study_status in ("running", "queued", "paused")


def create_slots(session: Session, study_id: str, n_trials: int) -> None:
    """The study's budget as queued slots, numbered 0..n-1 (search slots 0..n-1 too: `search_index`); parameters
    are sampled when a slot is claimed. The study's claim permits come with its row (a trigger, migration 0007)."""
    session.execute(
        text("INSERT INTO trials (study_id, number, search_index) "
             "SELECT :sid, g, g FROM generate_series(0, :n - 1) AS g"),
        {"sid": study_id, "n": n_trials},
    )


# ------------------------------------------------------------------ claiming

# The next study to claim from, in one snapshot, locking nothing: claims of one study never wait on, or skip, its
# row. Studies of the project with the lowest fair-share virtual time first (fair_share.py), the oldest first
# within a project. Never raises whatever a row holds (study_sql.py): a study whose columns are unusable passes
# (its timeout counts as not passed) and is quarantined by the claim (study_check.py).
# `contended`: whether another project has work too (only then is the claim charged).
_NEXT_STUDY = text(f"""
    SELECT chosen.*, {fair_share.contended_sql("chosen")} AS contended FROM (
        SELECT {CHECKED_COLUMNS}, spec, status, project FROM studies
        WHERE id <> ALL(:tried) AND {fair_share.CLAIMABLE_SQL}
        ORDER BY {fair_share.PROJECT_VTIME_SQL}, created_at, id
        LIMIT 1
    ) AS chosen
""")


def _claim_in_study_sql(trial_lock: str) -> TextClause:
    """One statement: a free permit of the study (its concurrency cap as rows, see models.ClaimPermit) and its
    next queued slot in `number` order, each locked `FOR UPDATE SKIP LOCKED`, the slot leased and the permit
    held by it, the worker marked busy. Every lookup is one index probe (ix_claim_permits_free, ix_trials_claim),
    so a claim costs the same at 10 trials or 10^5, and concurrent claims of one study take different rows
    instead of waiting on each other. `permitted` says whether a permit was free. The study is checked again
    in this snapshot (still active, its timeout not passed). A permit taken with no slot is given back by
    rolling back the savepoint around the statement (`_claim_in_study`).

    `trial_lock`: `FOR UPDATE SKIP LOCKED`, or `FOR UPDATE` for the second try when every queued slot was locked
    by other claims: it waits for them and takes a slot one of them left (rolled back) rather than come back
    empty while a slot is queued."""
    return text(f"""
    WITH permit AS (
        SELECT study_id, slot FROM claim_permits
        WHERE study_id = :sid AND trial_id IS NULL AND slot < :max_concurrent
        ORDER BY slot
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), pick AS (
        SELECT id FROM trials
        WHERE study_id = :sid AND state = 'queued' AND EXISTS (SELECT 1 FROM permit)
          AND EXISTS (SELECT 1 FROM studies WHERE id = :sid AND status IN {ACTIVE_STUDY} AND NOT {TIMED_OUT_SQL})
        ORDER BY number
        LIMIT 1
        {trial_lock}
    ), claimed AS (
        UPDATE trials t
        SET state = 'running', attempts = t.attempts + 1, lease_token = :token, worker_id = :worker_id,
            lease_expires_at = now() + make_interval(secs => :lease_seconds),
            started_at = coalesce(t.started_at, now()), failure_reason = NULL
        FROM pick WHERE t.id = pick.id
        RETURNING {_CLAIM_COLUMNS}
    ), held AS (
        UPDATE claim_permits p SET trial_id = claimed.id FROM claimed, permit
        WHERE p.study_id = permit.study_id AND p.slot = permit.slot
    ), busy AS (
        UPDATE workers w SET current_trial_id = claimed.id, status = 'busy' FROM claimed
        WHERE w.id = CAST(:worker_id AS int)
    )
    SELECT EXISTS (SELECT 1 FROM permit) AS permitted, claimed.*
    FROM (VALUES (1)) AS one (x) LEFT JOIN claimed ON true
""")


_CLAIM_COLUMNS = """t.id, t.study_id, t.number, t.attempts, t.params, t.optuna_trial_id, t.resume_key, t.resume_sha256,
                    t.resume_examples, t.fault_count, t.kind, t.train_seed, t.search_index"""
_CLAIM_SKIPPING = _claim_in_study_sql("FOR UPDATE SKIP LOCKED")
_CLAIM_WAITING = _claim_in_study_sql("FOR UPDATE")

# A trial this (idle) worker already holds: a claim whose commit reached the database but whose answer never
# reached the worker (the connection broke in between). The worker takes it back under a new token instead of
# leaving it to expire; the attempt was already counted (and its permit stays held: the trial never stopped
# running).
_RECLAIM_OWN = text(f"""
    UPDATE trials t
    SET lease_token = :token, lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE t.id = (SELECT id FROM trials WHERE worker_id = :worker_id AND state = 'running'
                  AND lease_expires_at > now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING {_CLAIM_COLUMNS}
""")


def claim(factory: sessionmaker[Session], worker_id: int | None, lease_seconds: float) -> tuple[Claim, str] | None:
    """Claim the next runnable slot across active studies: the project whose turn it is (fair share between
    projects, weighted by their `share`: service/store/fair_share.py), its oldest study. Returns (claim, study_id)
    or None.

    No study row is locked: a claim takes a free permit of the study and its next queued slot (`number` order),
    both `SKIP LOCKED`, so any number of workers claim one study at once, and the per-study concurrency cap holds
    exactly (a trial runs only while it holds one of `max_concurrent_trials` permits). A claim comes back empty
    only when no active study has a queued slot it could take: one whose free permits are all being taken by
    other claims is at its cap once they commit, and when every queued slot of a study with a free permit is
    locked by other claims, the claim waits for them (`_CLAIM_WAITING`) instead of returning empty.
    Safe to retry after a lost connection: a claim that committed unseen is found again (`_RECLAIM_OWN`).
    A study whose row is corrupt, or whose claim fails for a reason that is not transient, is quarantined
    (service/store/quarantine.py) and the claim goes on with the next study."""
    with session_scope(factory) as s:
        if worker_id is not None:
            token = uuid.uuid4()
            got = s.execute(_RECLAIM_OWN, {"token": token, "worker_id": worker_id,
                                           "lease_seconds": lease_seconds}).first()
            if got is not None:
                return _claim(got, token), got.study_id
        tried: list[str] = []
        while True:
            row = s.execute(_NEXT_STUDY, {"tried": tried}).first()
            if row is None:
                return None
            tried.append(row.id)
            try:
                study_check.check_row(row)
            except CorruptStudy as exc:
                quarantine.mark(s, row.id, "claim", exc)
                continue
            token = uuid.uuid4()
            got = _claim_in_study(s, row.id, row.max_concurrent_trials, token, worker_id, lease_seconds)
            if got is not None:
                # The project's row (locked by the charge until the commit) before the study's: the order the
                # quota checks take them in (quotas.py).
                if row.contended:
                    fair_share.charge(s, row.project)
                if row.status == "queued":
                    lifecycle.mark_started(s, row.id)
                return _claim(got, token), row.id


def _claim_in_study(s: Session, study_id: str, max_concurrent: int, token: uuid.UUID, worker_id: int | None,
                    lease_seconds: float) -> Any:
    """The study's next queued slot, claimed, or None (no permit free, or no slot left to take). Each try runs
    in a savepoint, rolled back when it took nothing (so a permit it locked is free again at once); a try that
    fails for a reason that is not transient quarantines the study, like `quarantine.isolated`."""
    params = {"sid": study_id, "max_concurrent": max_concurrent, "token": token, "worker_id": worker_id,
              "lease_seconds": lease_seconds}
    for statement in (_CLAIM_SKIPPING, _CLAIM_WAITING):
        attempt = s.begin_nested()
        try:
            got = s.execute(statement, params).one()
        except Exception as exc:  # noqa: BLE001 - sorted right below
            attempt.rollback()
            if not quarantine.is_poison(exc):
                raise
            quarantine.mark(s, study_id, "claim", exc)
            return None
        if got.id is not None:
            attempt.commit()
            return got
        attempt.rollback()
        if not got.permitted:
            return None
    return None


def _claim(got: Any, token: uuid.UUID) -> Claim:
    return Claim(Lease(got.id, token), got.study_id, got.number, got.attempts, got.params, got.optuna_trial_id,
                 got.resume_key, got.resume_sha256, got.resume_examples, got.fault_count, got.kind, got.train_seed,
                 got.search_index)


# ------------------------------------------------------------------ writes guarded by the lease

# A lease holds until it expires (by the database clock): once expired, even before the reaper took the trial
# away, the old attempt's writes are refused, so an attempt cut off for longer than the lease never races the
# next one.
_GUARD = "id = :tid AND lease_token = :token AND state = 'running' AND lease_expires_at > now()"


def _history(event: str = ":event", fault: str = ":fault") -> str:
    """SET clause appending one entry to the trial's history: the attempt (its number before the update), when,
    on which worker, how it ended and the fault it met (NULL: none), and how far it had trained
    (`examples_seen`, as last reported) beyond its last resumable checkpoint (`resume_examples`): what the next
    attempt trains again."""
    return (f"history = history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at', now(), "
            f"'worker_id', worker_id, 'event', CAST({event} AS text), 'fault', CAST({fault} AS text), "
            f"'examples_seen', examples_seen, 'resume_examples', resume_examples))")


def _text(value: str | None) -> str | None:
    """A reason or event as PostgreSQL text can hold it (an exception's message may carry a NUL or a lone
    surrogate, which would make the write itself fail)."""
    if value is None:
        return None
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _lost(lease: Lease) -> LeaseLost:
    return LeaseLost(f"trial {lease.trial_id}: the lease was lost (attempt token no longer holds it)")


def _guarded(factory: sessionmaker[Session], lease: Lease, sql: str, params: dict[str, Any]) -> Any:
    with session_scope(factory) as s:
        row = s.execute(text(sql), {"tid": lease.trial_id, "token": lease.token, **params}).first()
    if row is None:
        raise _lost(lease)
    return row


def check_lease(factory: sessionmaker[Session], lease: Lease) -> None:
    """LeaseLost unless the lease still holds (a cheap read before work that is hard to undo)."""
    _guarded(factory, lease, f"SELECT id FROM trials WHERE {_GUARD}", {})


def heartbeat(factory: sessionmaker[Session], lease: Lease, lease_seconds: float) -> Beat:
    row = _guarded(
        factory, lease,
        f"""UPDATE trials SET lease_expires_at = now() + make_interval(secs => :ls)
            WHERE {_GUARD}
            RETURNING (SELECT status FROM studies WHERE studies.id = trials.study_id)""",
        {"ls": lease_seconds},
    )
    return Beat(study_status=row[0])


def attach_optuna_trial(factory: sessionmaker[Session], lease: Lease, optuna_trial_id: int) -> int:
    """Name the Optuna trial this slot samples from, right after it was created (before any parameter is
    sampled), so that a crash in between leaves the slot its Optuna trial. Returns the slot's Optuna trial id:
    `optuna_trial_id`, or the one it already had."""
    with session_scope(factory) as s:
        row = s.execute(text(f"SELECT optuna_trial_id FROM trials WHERE {_GUARD} FOR UPDATE"),
                        {"tid": lease.trial_id, "token": lease.token}).first()
        if row is None:
            raise _lost(lease)
        if row.optuna_trial_id is not None:
            return int(row.optuna_trial_id)
        s.execute(text("UPDATE trials SET optuna_trial_id = :otid WHERE id = :tid"),
                  {"tid": lease.trial_id, "otid": optuna_trial_id})
    return optuna_trial_id


def set_params(factory: sessionmaker[Session], lease: Lease, params: dict[str, Any], optuna_trial_id: int) -> None:
    _guarded(factory, lease,
             f"UPDATE trials SET params = CAST(:params AS jsonb), optuna_trial_id = :otid WHERE {_GUARD} RETURNING id",
             {"params": json.dumps(params), "otid": optuna_trial_id})


@dataclass(frozen=True)
class Reported:
    value: float  # the value stored at that point: the first one reported there, by whichever attempt
    new: bool  # False: the point existed already (a resumed attempt, or a retry of a write that went through)


def report(factory: sessionmaker[Session], lease: Lease, examples_seen: int, value: float) -> Reported:
    """Record an intermediate value; a point reported before keeps its first value (which is returned)."""
    with session_scope(factory) as s:
        owner = s.execute(text(f"SELECT 1 FROM trials WHERE {_GUARD} FOR UPDATE"),
                          {"tid": lease.trial_id, "token": lease.token}).first()
        if owner is None:
            raise _lost(lease)
        inserted = s.execute(
            text("INSERT INTO intermediate_values (trial_id, examples_seen, value) VALUES (:tid, :n, :v) "
                 "ON CONFLICT (trial_id, examples_seen) DO NOTHING RETURNING value"),
            {"tid": lease.trial_id, "n": examples_seen, "v": value},
        ).first()
        stored = inserted[0] if inserted is not None else s.execute(
            text("SELECT value FROM intermediate_values WHERE trial_id = :tid AND examples_seen = :n"),
            {"tid": lease.trial_id, "n": examples_seen}).scalar_one()
        s.execute(text("UPDATE trials SET last_eval = :v WHERE id = :tid"), {"tid": lease.trial_id, "v": value})
    return Reported(value=float(stored), new=inserted is not None)


def progress(factory: sessionmaker[Session], lease: Lease, examples_seen: int, planned: int,
             eta_seconds: float | None) -> None:
    _guarded(factory, lease,
             f"""UPDATE trials SET examples_seen = :n, planned_examples = :planned, eta_seconds = :eta
                 WHERE {_GUARD} RETURNING id""",
             {"n": examples_seen, "planned": planned, "eta": eta_seconds})


def set_precision(factory: sessionmaker[Session], lease: Lease, precision: str) -> None:
    """Record what the trial trains in ('fp32', 'bf16' or 'fp16'), as it starts training (each attempt: a
    resumed attempt on another worker may run another precision, and the last one is what the result holds)."""
    _guarded(factory, lease, f"UPDATE trials SET precision = :p WHERE {_GUARD} RETURNING id", {"p": precision})


def record_resume_checkpoint(factory: sessionmaker[Session], lease: Lease, key: str, sha256: str,
                             examples_seen: int) -> str | None:
    """Point the trial at its newest resumable checkpoint; returns the key it replaces (no longer named by
    the row: the caller deletes it when it wrote it, else the orphan collector does)."""
    with session_scope(factory) as s:
        old = s.execute(text(f"SELECT resume_key FROM trials WHERE {_GUARD} FOR UPDATE"),
                        {"tid": lease.trial_id, "token": lease.token}).first()
        if old is None:
            raise _lost(lease)
        s.execute(text("UPDATE trials SET resume_key = :key, resume_sha256 = :sha, resume_examples = :n "
                       "WHERE id = :tid"), {"tid": lease.trial_id, "key": key, "sha": sha256, "n": examples_seen})
    return old[0] if old[0] not in (None, key) else None


def release(factory: sessionmaker[Session], lease: Lease, event: str = "given back",
            fault: str | None = None) -> bool:
    """Give the trial back to the queue (graceful shutdown, study stopped, or a transient fault: `fault` says
    which, and counts toward the trial's fault cap): never an attempt used up."""
    with session_scope(factory) as s:
        row = s.execute(
            text(f"""UPDATE trials SET state = 'queued', lease_token = NULL, worker_id = NULL,
                         lease_expires_at = NULL, attempts = greatest(attempts - 1, 0),
                         fault_count = fault_count + CASE WHEN CAST(:fault AS text) IS NULL THEN 0 ELSE 1 END,
                         {_history()}
                     WHERE {_GUARD} RETURNING id, worker_id"""),
            {"tid": lease.trial_id, "token": lease.token, "event": _text(event), "fault": _text(fault)},
        ).first()
        if row is not None and row.worker_id is not None:
            s.execute(text("UPDATE workers SET current_trial_id = NULL, status = 'idle' WHERE id = :w"),
                      {"w": row.worker_id})
    return row is not None


def note(factory: sessionmaker[Session], trial_id: int, attempt: int, worker_id: int | None, event: str,
         fault: str | None) -> None:
    """Add what an attempt met to the trial's history when that attempt can no longer write under its lease
    (it lost it): history only, nothing else about the trial changes."""
    with session_scope(factory) as s:
        s.execute(text("""UPDATE trials SET history = history || jsonb_build_array(jsonb_build_object(
                              'attempt', CAST(:attempt AS int), 'at', now(), 'worker_id', CAST(:w AS int),
                              'event', CAST(:event AS text), 'fault', CAST(:fault AS text)))
                          WHERE id = :tid"""),
                  {"tid": trial_id, "attempt": attempt, "w": worker_id, "event": _text(event), "fault": _text(fault)})


def history(factory: sessionmaker[Session], trial_id: int) -> list[dict[str, Any]]:
    """The trial's attempts that ended, oldest first: {attempt, at, worker_id, event, fault, examples_seen,
    resume_examples}."""
    with session_scope(factory) as s:
        return list(s.execute(text("SELECT history FROM trials WHERE id = :tid"), {"tid": trial_id}).scalar_one())


@dataclass(frozen=True)
class Finish:
    state: str  # complete | pruned | failed
    value: float | None = None
    metrics: dict[str, Any] | None = None
    failure_reason: str | None = None
    checkpoint_key: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_bytes: int | None = None
    examples_seen: int | None = None  # where training ended (pruned, early-stopped, or the plan)


def finish(factory: sessionmaker[Session], lease: Lease, result: Finish, pause_after_streak: int) -> str:
    """End the trial (guarded by the lease: publishing the final checkpoint is this one write) and settle the
    study. Returns the study's status afterwards. A final checkpoint that would pass the project's byte quota is
    a PayloadTooLarge (checked under the project's row lock with the checkpoint counted), and nothing is
    recorded: the worker deletes the object and fails the trial with that reason.

    The finishing token stays on the row, so a retry of a finish whose commit went through unseen is
    recognised (and answered the same) instead of being taken for a lost lease."""
    with session_scope(factory) as s:
        row = s.execute(
            text(f"""UPDATE trials SET state = :state, value = :value, rank_key = {RANK_KEY_SQL},
                         metrics = CAST(:metrics AS jsonb),
                         failure_reason = :reason, lease_expires_at = NULL,
                         finished_at = now(), eta_seconds = NULL,
                         examples_seen = coalesce(:examples, examples_seen),
                         checkpoint_key = :ck, checkpoint_sha256 = :csha, checkpoint_bytes = :cbytes,
                         {_history(":state", ":reason")}
                     WHERE {_GUARD} RETURNING study_id, worker_id"""),
            {"tid": lease.trial_id, "token": lease.token, "state": result.state, "value": result.value,
             "metrics": json.dumps(result.metrics) if result.metrics is not None else None,
             "reason": _text(result.failure_reason), "ck": result.checkpoint_key, "csha": result.checkpoint_sha256,
             "cbytes": result.checkpoint_bytes, "examples": result.examples_seen},
        ).first()
        if row is None:
            done = s.execute(text("SELECT study_id FROM trials WHERE id = :tid AND lease_token = :token "
                                  "AND state = :state AND coalesce(checkpoint_key, '') = coalesce(:ck, '')"),
                             {"tid": lease.trial_id, "token": lease.token, "state": result.state,
                              "ck": result.checkpoint_key}).first()
            if done is None:
                raise _lost(lease)
            return _settle_after(s, done.study_id, None)  # this very finish, retried: already recorded
        study_id, worker_id = row
        if result.checkpoint_key is not None and result.checkpoint_bytes:
            _check_stored_bytes(s, study_id, result.checkpoint_bytes)
        if worker_id is not None:
            s.execute(text("UPDATE workers SET trials_done = trials_done + 1, current_trial_id = NULL, "
                           "status = 'idle' WHERE id = :w"), {"w": worker_id})
        return _settle_after(s, study_id, lambda: lifecycle.track_failures(
            s, study_id, result.state, _text(result.failure_reason), pause_after_streak), lease.trial_id)


def _check_stored_bytes(s: Session, study_id: str, nbytes: int) -> None:
    """The project's byte quota, under its row lock, with this trial's checkpoint already counted (the row was
    just updated): PayloadTooLarge rolls the finish back."""
    project = quotas.study_project(s, study_id)
    if project is not None:
        quotas.check_bytes(s, quotas.hold(s, project, quotas.BYTES), nbytes, f"final checkpoint of {nbytes} bytes",
                           counted=True)


def _settle_after(s: Session, study_id: str, track: Callable[[], None] | None, trial_id: int | None = None) -> str:
    """Settle the study after one of its trials ended, in a savepoint: a study whose settling fails for a reason
    that is not transient is quarantined, and the trial's own ending is kept. Returns the study's status."""

    def settle() -> str:
        if track is not None:
            track()
        status = lifecycle.settle_study(s, study_id, quick=True)
        # A baseline recorded meanwhile is seen (baseline_job.py).
        if trial_id is not None:
            baseline_job.mark_trial(s, trial_id)
        return status

    ok, status = quarantine.isolated(s, study_id, "settle", settle)
    return status if ok and status is not None else "failed"


# ------------------------------------------------------------------ the reaper


def reap_expired(factory: sessionmaker[Session]) -> list[Reaped]:
    """Trials whose lease expired go back to the queue as the next attempt (same parameters), or fail once
    the study's max_attempts are used up. Studies whose timeout passed are settled. Each study is settled in a
    savepoint: one whose row is corrupt (or whose settling fails for a reason that is not transient) is
    quarantined, and the others are reaped and settled all the same."""
    with session_scope(factory) as s:
        rows = s.execute(text(f"""
            WITH expired AS (
                SELECT t.id, st.max_attempts FROM trials t JOIN studies st ON st.id = t.study_id
                WHERE t.state = 'running' AND t.lease_expires_at < now()
                FOR UPDATE OF t SKIP LOCKED
            )
            UPDATE trials t SET
                state = CASE WHEN t.attempts >= e.max_attempts THEN 'failed' ELSE 'queued' END,
                failure_reason = CASE WHEN t.attempts >= e.max_attempts
                    THEN 'lease expired on attempt ' || t.attempts || ' of ' || e.max_attempts
                         || ' (worker lost); no attempts left'
                    ELSE 'lease expired on attempt ' || t.attempts || ' (worker lost); re-queued' END,
                finished_at = CASE WHEN t.attempts >= e.max_attempts THEN now() END,
                {_history("'lease expired'", "'no heartbeat within the lease: the worker died, hung or was cut "
                                              "off from the database'")},
                lease_token = NULL, lease_expires_at = NULL, worker_id = NULL
            FROM expired e WHERE t.id = e.id
            RETURNING t.id, t.study_id, t.number, t.state, t.optuna_trial_id
        """)).all()
        s.execute(text("UPDATE workers SET current_trial_id = NULL, status = 'lost' "
                       "WHERE current_trial_id = ANY(:ids)"), {"ids": [r.id for r in rows]})
        # Active studies whose row holds what no study can are quarantined (even one no claim reaches).
        for bad in s.execute(text(f"SELECT {CHECKED_COLUMNS} FROM studies WHERE status IN {ACTIVE_STUDY} "
                                  f"AND NOT {COLUMNS_OK_SQL} FOR UPDATE SKIP LOCKED")).all():
            try:
                study_check.check_columns(bad)
            except CorruptStudy as exc:
                quarantine.mark(s, bad.id, "reap", exc)
        studies = {r.study_id for r in rows}
        studies |= set(s.execute(text(f"""
            SELECT id FROM studies WHERE status IN {ACTIVE_STUDY} AND {TIMED_OUT_SQL}
        """)).scalars())
        for study_id in sorted(studies):
            quarantine.isolated(s, study_id, "reap", lifecycle.settle_study, s, study_id)
    return [Reaped(r.id, r.study_id, r.number, r.state, r.optuna_trial_id) for r in rows]


def reported_points(factory: sessionmaker[Session], trial_id: int) -> frozenset[int]:
    return frozenset(reported_values(factory, trial_id))


def reported_values(factory: sessionmaker[Session], trial_id: int) -> dict[int, float]:
    """The trial's intermediate values so far, {examples_seen: value}."""
    with session_scope(factory) as s:
        return {int(n): float(v) for n, v in s.execute(
            text("SELECT examples_seen, value FROM intermediate_values WHERE trial_id = :tid"), {"tid": trial_id})}


# ------------------------------------------------------------------ workers


def register_worker(factory: sessionmaker[Session], host: str, pid: int, device: str,
                    scheduler: SchedulerJob | None = None, *, bf16: str | None = None) -> int:
    """A new worker row; `scheduler` names the batch job it runs in (a SLURM array task), when it does; `bf16`
    the device's native bfloat16 unit ('amx', 'avx512_bf16', 'cuda' or 'none'; workers/devices.py)."""
    job = scheduler or SchedulerJob(None, None, None)
    with session_scope(factory) as s:
        return int(s.execute(text("""
            INSERT INTO workers (host, pid, device, scheduler, scheduler_job, scheduler_task, bf16)
            VALUES (:h, :p, :d, :sched, :job, :task, :bf16) RETURNING id"""),
            {"h": host, "p": pid, "d": device, "sched": job.scheduler, "job": job.job, "task": job.task,
             "bf16": bf16}
        ).scalar_one())


def worker_heartbeat(factory: sessionmaker[Session], worker_id: int) -> None:
    with session_scope(factory) as s:
        s.execute(text("UPDATE workers SET last_heartbeat_at = now() WHERE id = :w"), {"w": worker_id})


def expire_leases_of(factory: sessionmaker[Session], host: str, pid: int) -> int:
    """The worker process `pid` on `host` is known dead (its supervisor saw it exit): its trials' leases end
    now, so the next reaper round re-queues them instead of waiting out the lease. Returns how many."""
    with session_scope(factory) as s:
        return len(s.execute(text("""
            UPDATE trials SET lease_expires_at = now()
            WHERE state = 'running' AND lease_expires_at > now()
              AND worker_id IN (SELECT id FROM workers WHERE host = :h AND pid = :p AND stopped_at IS NULL)
            RETURNING id"""), {"h": host, "p": pid}).all())


def worker_stopped(factory: sessionmaker[Session], worker_id: int) -> None:
    with session_scope(factory) as s:
        s.execute(text("UPDATE workers SET status = 'stopped', stopped_at = now(), current_trial_id = NULL "
                       "WHERE id = :w"), {"w": worker_id})
