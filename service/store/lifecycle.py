"""The study state machine, in one place: queued -> running (first claim) -> completed | failed (settled when
no trial can run any more; a study with `confirm` first gets its confirm runs), paused / stopped / resumed by
the user, paused after a streak of identical failures, extended with more trials (a stopped or completed study
runs again). Every transition locks the study row first. A request whose study row turns out to be corrupt
quarantines the study (service/store/quarantine.py) and answers a Conflict, never an internal error."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import Conflict, InvalidInput, NotFound
from service.store import confirm, quarantine, quotas, study_check, trial_counts
from service.store.db import session_scope
from service.store.study_sql import ACTIVE_STUDY, CHECKED_COLUMNS, TIMED_OUT_SQL
from service.store.winner import winner_run_number


def mark_started(s: Session, study_id: str) -> None:
    """The first claim of a queued study starts it. A no-op (and no row lock) once another claim did: the
    claim calls it only for a study it read as queued."""
    s.execute(text("UPDATE studies SET status = 'running', started_at = coalesce(started_at, now()), "
                   "updated_at = now() WHERE id = :sid AND status = 'queued'"), {"sid": study_id})


def track_failures(s: Session, study_id: str, state: str, failure_reason: str | None, pause_after_streak: int) -> None:
    """A streak of identical failures pauses the study (with the reason); any other ending resets it."""
    if state != "failed":
        s.execute(text("UPDATE studies SET failure_streak = 0 WHERE id = :sid AND failure_streak <> 0"),
                  {"sid": study_id})
        return
    s.execute(
        text("""UPDATE studies SET
                    failure_streak = CASE WHEN last_failure_reason = :reason THEN failure_streak + 1 ELSE 1 END,
                    last_failure_reason = :reason
                WHERE id = :sid"""),
        {"sid": study_id, "reason": failure_reason},
    )
    s.execute(
        text(f"""UPDATE studies SET status = 'paused', updated_at = now(),
                     status_reason = 'paused after ' || failure_streak || ' trials failed in a row: ' || :reason
                 WHERE id = :sid AND status IN {ACTIVE_STUDY} AND failure_streak >= :n"""),
        {"sid": study_id, "reason": failure_reason, "n": pause_after_streak},
    )


# Whether an active study surely has nothing to settle yet: a queued slot, and its timeout not passed. Index
# probes only, no lock.
_BUSY = text(f"""
    SELECT status, (status IN {ACTIVE_STUDY} AND NOT {TIMED_OUT_SQL}
                    AND EXISTS (SELECT 1 FROM trials t WHERE t.study_id = studies.id AND t.state = 'queued')) AS busy
    FROM studies WHERE id = :sid""")


def settle_study(s: Session, study_id: str, *, quick: bool = False) -> str:
    """Complete (or fail) an active study once no trial can run any more: every slot ended, or the timeout
    passed with nothing running (never-started slots are then dropped, and started ones left in the queue fail).
    A study with `confirm` whose search budget is spent gets its confirm runs instead, in this transaction
    (service/store/confirm.py), and completes once they have finished. On completing, the test split is scheduled
    when the winner's run is not the one scored last.

    `quick` (a trial's finish): while the study is active, its timeout not passed, and a slot is still queued,
    there is nothing to settle and no lock is taken (`_BUSY`): the queued slot's own claim and finish settle it
    later (or a timeout, which the reaper settles), so finishing trials never queue on the study row (and a
    corrupt row is found by the next claim's check instead, study_check.py). Otherwise the study row is locked
    first, and the check runs in a statement after the lock: two trials finishing at once would otherwise each
    still see the other as running, and neither would settle the study. A timed-out study also locks its queued
    slots before the check, waiting out any claim of them in flight (claims lock no study row), so it never
    settles while a slot it counted as queued is starting."""
    if quick:
        busy = s.execute(_BUSY, {"sid": study_id}).first()
        if busy is not None and busy.busy:
            return str(busy.status)
    s.execute(text("SELECT 1 FROM studies WHERE id = :sid FOR UPDATE"), {"sid": study_id})
    s.execute(text(f"""SELECT id FROM trials WHERE study_id = :sid AND state = 'queued'
                         AND (SELECT {TIMED_OUT_SQL} FROM studies WHERE id = :sid)
                       FOR UPDATE"""), {"sid": study_id})
    if confirm.enqueue_confirm_runs(s, study_id):
        return s.execute(text("SELECT status FROM studies WHERE id = :sid"), {"sid": study_id}).scalar_one()
    completed = s.execute(
        text(f"""
        WITH st AS (
            SELECT id, {TIMED_OUT_SQL} AS timed_out
            FROM studies WHERE id = :sid AND status IN {ACTIVE_STUDY}
        ), open AS (
            SELECT count(*) FILTER (WHERE state = 'running') AS running,
                   count(*) FILTER (WHERE state = 'queued') AS queued
            FROM trials WHERE study_id = :sid
        ), done AS (
            SELECT st.id FROM st, open
            WHERE open.running = 0 AND (open.queued = 0 OR st.timed_out)
        ), dropped AS (
            DELETE FROM trials t USING done
            WHERE t.study_id = done.id AND t.state = 'queued' AND t.attempts = 0 AND t.params IS NULL
              AND t.optuna_trial_id IS NULL
        ), leftover AS (
            -- Slots that had started (and went back to the queue) when the timeout passed end as failed, so
            -- their Optuna trials are ended too (by the reconciler) and nothing stays queued in a finished study.
            UPDATE trials t SET state = 'failed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
                failure_reason = 'the study timed out before this trial finished',
                history = t.history || jsonb_build_array(jsonb_build_object('attempt', t.attempts, 'at', now(),
                    'worker_id', t.worker_id, 'event', 'failed', 'fault', 'study timed out'))
            FROM done
            WHERE t.study_id = done.id AND t.state = 'queued'
              AND NOT (t.attempts = 0 AND t.params IS NULL AND t.optuna_trial_id IS NULL)
        )
        UPDATE studies SET
            status = CASE WHEN EXISTS (SELECT 1 FROM trials WHERE study_id = :sid AND state = 'complete')
                          THEN 'completed' ELSE 'failed' END,
            status_reason = CASE WHEN EXISTS (SELECT 1 FROM trials WHERE study_id = :sid AND state = 'complete')
                          THEN status_reason ELSE 'no trial completed' END,
            finished_at = now(), updated_at = now()
        FROM done WHERE studies.id = done.id
        RETURNING studies.status
        """),
        {"sid": study_id},
    ).scalar_one_or_none()
    if completed == "completed":
        _schedule_test_score(s, study_id)
    return s.execute(text("SELECT status FROM studies WHERE id = :sid"), {"sid": study_id}).scalar_one()


def _schedule_test_score(s: Session, study_id: str) -> None:
    """On completing: the test split is (re-)scored when the winner's run is not the one scored last (the first
    completion, or an extend that changed the winner). The old score stays, flagged, until the new one lands."""
    s.execute(text("""UPDATE studies SET test_attempts = 0, test_lease_token = NULL, test_lease_expires_at = NULL,
                          test_rescore = test_value IS NOT NULL
                      WHERE id = :sid AND test_trial_number IS DISTINCT FROM CAST(:number AS int)"""),
              {"sid": study_id, "number": winner_run_number(s, study_id)})


Action = Literal["pause", "resume", "stop"]
_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    # action: (from states, to state). Resume goes back to 'queued' or 'running' depending on history.
    "pause": (("queued", "running"), "paused"),
    "stop": (("queued", "running", "paused"), "stopped"),
    "resume": (("paused", "stopped"), "running"),
}


def change_status(factory: sessionmaker[Session], study_id: str, action: Action) -> str:
    """Pause: no new trials start, running ones finish. Stop: running trials are interrupted at their next
    step and given back to the queue with their checkpoint, so a later resume loses nothing. Resume: both; a
    stopped study (unlike a paused one) is active again, within its project's quotas on active studies and
    queued trials (429 naming the quota otherwise)."""
    return quarantine.guarded(factory, study_id, action, _change_status, factory, study_id, action)


def _change_status(factory: sessionmaker[Session], study_id: str, action: Action) -> str:
    allowed, target = _TRANSITIONS[action]
    with session_scope(factory) as s:
        limits = _hold_quotas(s, study_id) if action == "resume" else None
        row = s.execute(text("SELECT status, started_at FROM studies WHERE id = :id FOR UPDATE"),
                        {"id": study_id}).first()
        if row is None:
            raise NotFound(f"study {study_id} not found", field="study_id")
        if row.status == target:
            return target
        if row.status not in allowed:
            raise Conflict(f"cannot {action} a study that is {row.status}", field="status")
        if action == "resume" and row.started_at is None:
            target = "queued"
        if row.status == "stopped":  # active again, its queued slots with it (a paused study still counts)
            quotas.check_counts(s, limits, studies=1, trials=trial_counts.trial_total(s, study_id, "queued"))
        s.execute(text("UPDATE studies SET status = :t, status_reason = NULL, updated_at = now(), "
                       "failure_streak = CASE WHEN :t IN ('queued', 'running') THEN 0 ELSE failure_streak END "
                       "WHERE id = :id"), {"t": target, "id": study_id})
        if target == "running":
            return settle_study(s, study_id)
    return target


def extend(factory: sessionmaker[Session], study_id: str, n_trials: int, cap: int) -> str:
    """Add `n_trials` search slots after the study's last trial and raise its budget; the Optuna study and its
    history stay. A stopped or completed study runs again (and completes again, with new confirm runs for new
    top configurations); a paused one stays paused. Returns the status afterwards. Not idempotent: each call
    adds its slots, within the project's quotas (QuotaExceeded: the new slots, and a stopped or completed study
    that runs again, count). A study whose row is corrupt (study_check.py) is quarantined: a Conflict."""
    return quarantine.guarded(factory, study_id, "extend", _extend, factory, study_id, n_trials, cap)


def _extend(factory: sessionmaker[Session], study_id: str, n_trials: int, cap: int) -> str:
    with session_scope(factory) as s:
        limits = _hold_quotas(s, study_id)
        row = s.execute(text(f"""SELECT {CHECKED_COLUMNS}, status, started_at, spec, {TIMED_OUT_SQL} AS timed_out
                                 FROM studies WHERE id = :id FOR UPDATE"""), {"id": study_id}).first()
        if row is None:
            raise NotFound(f"study {study_id} not found", field="study_id")
        if row.status not in EXTENDABLE:
            raise Conflict(f"cannot extend a study that is {row.status}", field="status")
        study_check.check_row(row)
        if row.n_trials + n_trials > cap:
            raise InvalidInput(f"the study has {row.n_trials} trials; {n_trials} more would pass the cap of {cap}",
                               field="n_trials")
        if row.timed_out:
            raise Conflict("the study's timeout_seconds has passed since it started: new trials could not run",
                           field="budget.timeout_seconds")
        # A stopped or completed study becomes active again (a stopped one with its queued slots).
        waking = row.status in ("stopped", "completed")
        queued = trial_counts.trial_total(s, study_id, "queued") if row.status == "stopped" else 0
        quotas.check_counts(s, limits, studies=1 if waking else 0, trials=n_trials + queued)
        s.execute(text("""INSERT INTO trials (study_id, number, search_index)
                          SELECT :sid, (SELECT coalesce(max(number), -1) FROM trials WHERE study_id = :sid) + g,
                                 (SELECT coalesce(max(search_index), -1) FROM trials WHERE study_id = :sid) + g
                          FROM generate_series(1, :n) AS g"""), {"sid": study_id, "n": n_trials})
        target = row.status
        if row.status in ("stopped", "completed"):
            target = "running" if row.started_at is not None else "queued"
        s.execute(text("""UPDATE studies SET n_trials = n_trials + :n, status = :t, updated_at = now(),
                              spec = jsonb_set(spec, '{budget,n_trials}', to_jsonb(n_trials + :n)),
                              finished_at = CASE WHEN :t IN ('queued', 'running') THEN NULL ELSE finished_at END,
                              status_reason = CASE WHEN :t = status THEN status_reason END,
                              failure_streak = CASE WHEN :t = status THEN failure_streak ELSE 0 END
                          WHERE id = :sid"""), {"sid": study_id, "n": n_trials, "t": target})
    return target


def _hold_quotas(s: Session, study_id: str) -> quotas.Limits | None:
    """The study's project row locked (when it sets a count quota), before the study row: the order every
    quota checker takes them in."""
    project = quotas.study_project(s, study_id)
    return quotas.hold(s, project, quotas.COUNTS) if project is not None else None


EXTENDABLE = ("queued", "running", "paused", "stopped", "completed")
