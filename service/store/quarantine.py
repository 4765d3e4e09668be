"""Quarantine: a study whose row makes a study-scoped operation fail for a reason that is not a transient
fault is failed on its own, and everything else goes on.

Claiming, settling, reaping, reconciling and scoring run over many studies; one row holding what no valid
study can (a value written by hand or by an older version: a timeout PostgreSQL cannot hold, a spec that no
longer validates, ...) must not stop the others. Each such operation runs per study, and an error that is not
a transient database fault (`db.transient_reason`: the database unreachable, a lost connection, a serialization
failure, a deadlock, a lock timeout, which keep their retries) nor one of the domain errors that are answers
(a lost lease, not found, a conflict) marks that study `failed` with `status_reason`
"quarantined: <operation>: <error class>: <message>", ends its open trials, and logs one line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InternalError
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import Conflict, CorruptStudy, StsweepError
from service.store.db import session_scope, transient_reason

log = logging.getLogger("stsweep.quarantine")

T = TypeVar("T")
REASON_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def is_poison(exc: BaseException) -> bool:
    """Whether `exc`, raised by an operation on one study, is that study's own fault: not a transient database
    fault, not the server's internal trouble, and not a domain error that answers the caller (CorruptStudy
    is one: a check of the row found it)."""
    if isinstance(exc, CorruptStudy):
        return True
    if isinstance(exc, StsweepError) or not isinstance(exc, Exception):
        return False
    if transient_reason(exc) is not None:
        return False
    return not isinstance(exc, InternalError)  # e.g. a transaction the server aborted: not the row's doing


def describe(operation: str, exc: BaseException) -> str:
    """"quarantined: <operation>: <error class>: <message>", one line, control characters stripped, at most
    REASON_CHARS characters."""
    if isinstance(exc, StsweepError):
        message = exc.message
    elif isinstance(exc, DBAPIError) and exc.orig is not None:
        message = str(exc.orig)
    else:
        message = str(exc)
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = f"quarantined: {operation}: {type(exc).__name__}: {lines[0] if lines else '(no message)'}"
    reason = _CONTROL.sub(" ", reason).encode("utf-8", "replace").decode("utf-8")
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 3] + "..."


def mark(s: Session, study_id: str, operation: str, exc: BaseException) -> bool:
    """Quarantine the study in `s`'s transaction: failed with the reason, its never-started slots dropped and
    its other open trials failed (their leases end, so their workers' next writes are refused and they move
    on), its baseline and test-split jobs released. False when it had failed already (nothing changes)."""
    reason = describe(operation, exc)
    failed = s.execute(text("""
        UPDATE studies SET status = 'failed', status_reason = :reason, finished_at = now(), updated_at = now(),
                           baseline_lease_token = NULL, baseline_lease_expires_at = NULL,
                           test_lease_token = NULL, test_lease_expires_at = NULL
        WHERE id = :sid AND status <> 'failed' RETURNING id"""), {"sid": study_id, "reason": reason}).first()
    if failed is None:
        return False
    s.execute(text("""DELETE FROM trials WHERE study_id = :sid AND state = 'queued' AND attempts = 0
                          AND params IS NULL AND optuna_trial_id IS NULL"""), {"sid": study_id})
    ended = s.execute(text("""
        UPDATE trials t SET state = 'failed', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
            eta_seconds = NULL, failure_reason = 'the study was quarantined',
            history = t.history || jsonb_build_array(jsonb_build_object('attempt', t.attempts, 'at', now(),
                'worker_id', t.worker_id, 'event', 'failed', 'fault', 'study quarantined'))
        WHERE t.study_id = :sid AND t.state IN ('queued', 'running') RETURNING t.id"""), {"sid": study_id}).scalars()
    s.execute(text("UPDATE workers SET current_trial_id = NULL, status = 'idle' WHERE current_trial_id = ANY(:ids)"),
              {"ids": list(ended)})
    log.error("study %s failed: %s", study_id, reason)
    return True


def quarantine(factory: sessionmaker[Session], study_id: str, operation: str, exc: BaseException) -> bool:
    """`mark`, in a transaction of its own."""
    with session_scope(factory) as s:
        return mark(s, study_id, operation, exc)


def isolated(s: Session, study_id: str, operation: str, fn: Callable[..., T], *args: object) -> tuple[bool, T | None]:
    """`fn(*args)` in a savepoint of `s`'s transaction: (True, its result), or, when it raised the study's own
    fault, (False, None) with the savepoint rolled back and the study quarantined in `s`'s transaction, which
    goes on with the other studies. Any other error is raised."""
    try:
        with s.begin_nested():
            return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 - sorted right below
        if not is_poison(exc):
            raise
        poisoned = exc
    mark(s, study_id, operation, poisoned)
    return False, None


def guarded(factory: sessionmaker[Session], study_id: str, operation: str, fn: Callable[..., T],
            *args: object) -> T:
    """`fn(*args)` (a request about one study, in its own transactions): when it raises the study's own fault,
    the study is quarantined and the caller gets a Conflict (409) naming the study, never an internal error."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - sorted right below
        if not is_poison(exc):
            raise
        poisoned = exc
    quarantine(factory, study_id, operation, poisoned)
    raise Conflict(f"study {study_id} cannot {operation}: its stored row is corrupt, so it was failed "
                   f"({describe(operation, poisoned)})", field="study_id") from poisoned
