"""Project quotas (NULL: unlimited), checked where new work or new bytes come in, in the transaction that stores
them: `max_active_studies` (studies queued, running or paused) and `max_trials` (queued plus running trials) when
a study is submitted, extended or resumed from `stopped`; `max_stored_bytes` (data sets plus final checkpoints)
when a data set is uploaded and when a trial records its final checkpoint.

The checker locks the project row first (`hold`: FOR NO KEY UPDATE, which every checker of the project waits on
but which lets rows referencing the project be inserted meanwhile) and reads the usage in a statement after the
lock, so two requests can never both pass a quota that only one of them fits. A project that sets none of the
quotas a request touches is neither locked nor read. Going over is a QuotaExceeded (429) naming the quota for
counts, a PayloadTooLarge (413) naming `max_stored_bytes` for bytes, both with the quota's value and the usage.
Only what is added is checked: a quota lowered below the usage stops new work and removes nothing, and a request
that adds nothing (resuming a paused study, a data set whose bytes the project already holds) always passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import PayloadTooLarge, QuotaExceeded
from service.core.spec import StudySpec
from service.store.db import session_scope
from service.store.projects import usage

Quota = Literal["max_active_studies", "max_trials", "max_stored_bytes"]
COUNTS: tuple[Quota, ...] = ("max_active_studies", "max_trials")
BYTES: tuple[Quota, ...] = ("max_stored_bytes",)

_LIMITS = "SELECT max_active_studies, max_trials, max_stored_bytes FROM projects WHERE name = :p"


@dataclass(frozen=True)
class Limits:
    """A project's quotas as read under its row lock (None: unlimited)."""

    project: str
    max_active_studies: int | None
    max_trials: int | None
    max_stored_bytes: int | None


def hold(s: Session, project: str, quotas: tuple[Quota, ...], *, lock: bool = True) -> Limits | None:
    """Lock the project's row until the transaction ends and read its quotas, when one of `quotas` is set;
    None (nothing locked, nothing to check) when none is, or when there is no such project (its insert fails on
    the foreign key instead). Take it before locking any study or trial row of the project. `lock=False`: a
    pre-check that spares work bound to be refused (the locked check is the one that counts)."""
    row = s.execute(text(_LIMITS), {"p": project}).first()
    if row is None or all(getattr(row, q) is None for q in quotas):
        return None
    if lock:
        row = s.execute(text(_LIMITS + " FOR NO KEY UPDATE"), {"p": project}).one()
    return Limits(project, row.max_active_studies, row.max_trials, row.max_stored_bytes)


def study_trials(spec: StudySpec) -> int:
    """The trials a new study counts against `max_trials`: its budget, plus its confirm runs (top_k
    configurations times seeds, at most) when it has `confirm`."""
    confirm = spec.confirm
    return spec.budget.n_trials + (confirm.top_k * confirm.seeds if confirm is not None else 0)


def check_counts(s: Session, limits: Limits | None, *, studies: int, trials: int) -> None:
    """QuotaExceeded (field: the quota) when adding `studies` active studies and `trials` queued trials would
    pass a count quota of `limits` (from `hold`, in this transaction)."""
    if limits is None or (studies <= 0 and trials <= 0):
        return
    used = usage(s, limits.project)
    for quota, adding, in_use, what in (("max_active_studies", studies, used.active_studies, "active studies"),
                                        ("max_trials", trials, used.trials, "queued or running trials")):
        limit = getattr(limits, quota)
        if limit is not None and adding > 0 and in_use + adding > limit:
            raise QuotaExceeded(f"project {limits.project} is at its quota of {what} ({quota}={limit}, used "
                                f"{in_use}): this would add {adding}", field=quota)


def check_bytes(s: Session, limits: Limits | None, adding: int, what: str, *, counted: bool = False) -> None:
    """PayloadTooLarge (field `max_stored_bytes`) when storing `adding` more bytes (`what`, e.g. "a data set of
    N bytes") would pass the project's byte quota. `counted`: the usage read now already holds them (a trial
    row updated earlier in this transaction)."""
    if limits is None or limits.max_stored_bytes is None or adding <= 0:
        return
    used = usage(s, limits.project).stored_bytes - (adding if counted else 0)
    if used + adding > limits.max_stored_bytes:
        raise PayloadTooLarge(over_bytes_message(limits.project, limits.max_stored_bytes, used, what),
                              field="max_stored_bytes")


def over_bytes_message(project: str, limit: int, used: int, what: str) -> str:
    return (f"project {project} is over its stored-bytes quota (max_stored_bytes={limit}, used {used}): "
            f"{what} not kept")


def study_project(s: Session, study_id: str) -> str | None:
    found = s.execute(text("SELECT project FROM studies WHERE id = :id"), {"id": study_id}).scalar_one_or_none()
    return None if found is None else str(found)


def checkpoint_room(factory: sessionmaker[Session], trial_id: int, nbytes: int) -> None:
    """Whether the trial's project has room for a final checkpoint of (at least) `nbytes`: PayloadTooLarge when
    it has not, read without a lock. A worker asks before uploading; `queue.finish` checks again, under the
    lock, where the checkpoint is recorded."""
    with session_scope(factory) as s:
        row = s.execute(text("SELECT st.project, p.max_stored_bytes FROM trials t "
                             "JOIN studies st ON st.id = t.study_id JOIN projects p ON p.name = st.project "
                             "WHERE t.id = :tid"), {"tid": trial_id}).first()
        if row is None or row.max_stored_bytes is None:
            return
        check_bytes(s, Limits(row.project, None, None, row.max_stored_bytes), nbytes,
                    f"final checkpoint of {nbytes} bytes")
