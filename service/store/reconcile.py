"""The reconciler, run by the elected maintenance round (service/store/maintenance.py): it makes Optuna's trials
and the artifact store agree with our tables after any fault (a worker killed between two writes, a database or
Optuna outage, a stale attempt).

It works from a queue, never by rescanning: a trigger adds a mark to `reconcile_marks` in the same transaction as
each state change that may leave Optuna or the store behind (a trial leaving `running`: finished, failed, given
back or reaped; any other state change but a claim; a study changing status), and the reaper adds a late one for
each attempt it took back (a stale writer may still upload). A round reads the due marks (at most `ROUND_MARKS`),
repairs those studies only and, in each, only Optuna's RUNNING trials and the marked trials (rows read by
primary key and by `ix_trials_optuna_trial`), then deletes the marks it read: a mark added meanwhile waits for the
next round, and a round cut short (an outage, a killed process) leaves its marks to the next one. So a round
costs O(what changed), whatever the number of studies and trials. Per study, Optuna's RUNNING trials are read
first and our rows second, so a trial created meanwhile is simply left for the next round:

- an Optuna trial whose slot of ours finished (complete, pruned, failed: a worker died between our write and
  Optuna's `tell`, or the reaper failed it) is ended in Optuna the same way;
- an orphan (created for a slot that never recorded it: the attempt died right after asking) goes back to its
  slot when that slot has none (the slot keeps its Optuna trial, and with it its enqueued configuration), and
  is failed only when the slot has another one or cannot run any more; an orphan whose attempt still holds
  the lease is left alone (it is being recorded); an untagged one younger than the grace is looked at again
  once the grace has passed (the study is marked for then);
- in a study that cannot run any more, no Optuna trial stays RUNNING;
- an object under a study's `trials/` folder that no row names and no live lease is writing (a stale or dead
  attempt's upload) is deleted, and what a dead worker left undone (retention, resumable checkpoints of ended
  trials) is done.

Every repair is idempotent. A study whose repair fails for a reason that is not transient is quarantined
(service/store/quarantine.py); the round goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import text

from service.context import Context
from service.core.errors import StorageError
from service.store import optuna_bridge, quarantine, queue, retention
from service.store.db import session_scope, transient_reason
from service.store.study_sql import json_int

log = logging.getLogger("stsweep.reconcile")

ROUND_MARKS = 2000  # marks one round reads at most; the rest wait for the next round
ENDED = ("complete", "pruned", "failed")
# Never a cast error, whatever a row holds (a spec that no longer validates is quarantined by the claim,
# service/store/study_check.py).
KEEP_TOP_K_SQL = json_int("spec->'keep_top_k'", "3")


@dataclass
class Repairs:
    told: list[str] = field(default_factory=list)  # "study #n: RUNNING -> COMPLETE"
    adopted: list[str] = field(default_factory=list)
    failed_orphans: list[str] = field(default_factory=list)
    deleted_objects: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)  # the studies this round looked at, in order
    rows_read: int = 0  # rows of ours the round read: O(changed), never O(all trials)
    later: set[str] = field(default_factory=set)  # studies to look at again once the orphan grace passed
    locked_out: bool = False  # the round stopped early: this process no longer holds the maintenance lease

    def __bool__(self) -> bool:
        return bool(self.told or self.adopted or self.failed_orphans or self.deleted_objects)


@dataclass(frozen=True)
class _Study:
    id: str
    optuna_name: str
    status: str
    keep_top_k: int

    @property
    def can_run(self) -> bool:
        return self.status in ("queued", "running", "paused", "stopped")


@dataclass(frozen=True)
class Mark:
    id: int
    study_id: str
    trial_id: int | None


def reconcile(ctx: Context, *, orphan_grace_seconds: float | None = None, collect_objects: bool = True,
              keep_going: Callable[[], bool] | None = None, limit: int = ROUND_MARKS) -> Repairs:
    """One round over the studies marked since the last one (see the module docstring). `orphan_grace_seconds`:
    how old an Optuna trial without our tags must be before it is failed (default: twice the lease).
    `keep_going` is asked before each study (the maintenance lease is renewed there); False ends the round."""
    grace = orphan_grace_seconds if orphan_grace_seconds is not None else 2 * ctx.settings.lease_seconds
    repairs = Repairs()
    for study_id, marks in _by_study(due_marks(ctx, limit)):
        if keep_going is not None and not keep_going():
            repairs.locked_out = True
            break
        trial_ids = {m.trial_id for m in marks if m.trial_id is not None}
        postpone = False
        try:
            reconcile_study(ctx, study_id, repairs, grace=grace, collect_objects=collect_objects,
                            trial_ids=trial_ids)
        except Exception as exc:  # noqa: BLE001 - one study's fault is quarantined, the round goes on
            if transient_reason(exc) is not None:
                raise  # the database is down: this study's marks (and the rest) wait for the next round
            if quarantine.is_poison(exc):
                quarantine.quarantine(ctx.sessions, study_id, "reconcile", exc)
            else:
                log.error("study %s: reconciling failed (%s: %s); tried again in %.0f s", study_id,
                          type(exc).__name__, exc, grace)
                postpone = True
        repairs.studies.append(study_id)
        later = grace if postpone or study_id in repairs.later else None
        consume(ctx, [m.id for m in marks], study_id, later)
    return repairs


def due_marks(ctx: Context, limit: int = ROUND_MARKS) -> list[Mark]:
    """The marks due now, oldest first (through ix_reconcile_marks_due)."""
    with session_scope(ctx.sessions) as s:
        rows = s.execute(text("SELECT id, study_id, trial_id FROM reconcile_marks WHERE due_at <= now() "
                              "ORDER BY due_at, id LIMIT :n"), {"n": limit}).all()
    return [Mark(r.id, r.study_id, r.trial_id) for r in rows]


def _by_study(marks: Iterable[Mark]) -> list[tuple[str, list[Mark]]]:
    grouped: dict[str, list[Mark]] = {}
    for m in marks:
        grouped.setdefault(m.study_id, []).append(m)
    return list(grouped.items())


def consume(ctx: Context, mark_ids: list[int], study_id: str, later_seconds: float | None = None) -> None:
    """The marks a round read are done; `later_seconds`: mark the study again, due that much later."""
    with session_scope(ctx.sessions) as s:
        s.execute(text("DELETE FROM reconcile_marks WHERE id = ANY(:ids)"), {"ids": mark_ids})
        if later_seconds is not None:
            mark_later(s, study_id, None, later_seconds)


def mark_later(s: Any, study_id: str, trial_id: int | None, seconds: float) -> None:
    """Mark a study (and a trial of it) for a round `seconds` from now, in the caller's transaction."""
    s.execute(text("INSERT INTO reconcile_marks (study_id, trial_id, due_at) "
                   "SELECT id, :tid, now() + make_interval(secs => :secs) FROM studies WHERE id = :sid"),
              {"sid": study_id, "tid": trial_id, "secs": seconds})


def _study(ctx: Context, study_id: str) -> _Study | None:
    with session_scope(ctx.sessions) as s:
        r = s.execute(text(f"SELECT id, optuna_study_name, status, {KEEP_TOP_K_SQL} AS k "
                           "FROM studies WHERE id = :id"), {"id": study_id}).first()
    return _Study(r.id, r.optuna_study_name, r.status, r.k) if r else None


def reconcile_study(ctx: Context, study_id: str, repairs: Repairs | None = None, *, grace: float = 120.0,
                    collect_objects: bool = True, trial_ids: set[int] | None = None) -> Repairs:
    """Repair one study (see the module docstring): its Optuna RUNNING trials and our rows `trial_ids` (None:
    all its rows, for an operator's full check). Safe to run beside live workers."""
    repairs = repairs if repairs is not None else Repairs()
    study = _study(ctx, study_id)
    if study is None:
        return repairs
    storage = ctx.optuna_storage
    try:
        optuna_id = storage.get_study_id_from_name(study.optuna_name)
    except KeyError:
        return repairs
    running = storage.get_all_trials(optuna_id, deepcopy=False, states=(TrialState.RUNNING,))
    if trial_ids is None:
        rows = _rows(ctx, study_id)
        marked = rows
    else:
        slots = {t.system_attrs.get(optuna_bridge.SLOT_ATTR) for t in running}
        wanted = trial_ids | {s for s in slots if isinstance(s, int)}
        rows = _rows(ctx, study_id, ids=wanted, optuna_ids={t._trial_id for t in running})
        marked = [r for r in rows if r.id in trial_ids]
    repairs.rows_read += len(rows)
    by_otid = {r.optuna_trial_id: r for r in rows if r.optuna_trial_id is not None}
    by_id = {r.id: r for r in rows}
    label = f"study {study_id}"
    for t in running:
        row = by_otid.get(t._trial_id)
        if row is not None:
            _end_like_ours(ctx, storage, t, row, study, repairs, label)
            continue
        _orphan(ctx, storage, t, by_id, study, repairs, label, grace)
    try:
        _finish_left_over_work(ctx, study, marked)
    except StorageError as exc:
        log.warning("%s: clean-up postponed, the artifact store failed (%s)", label, exc.message)
        repairs.later.add(study_id)
    if collect_objects:
        collect_orphan_objects(ctx, study_id, repairs)
    return repairs


_ROW_COLUMNS = """t.id, t.number, t.state, t.optuna_trial_id, t.value, t.lease_token, t.failure_reason,
                   t.resume_key, t.checkpoint_key, t.kind,
                   (SELECT iv.value FROM intermediate_values iv WHERE iv.trial_id = t.id
                    ORDER BY iv.examples_seen DESC LIMIT 1) AS last_value"""


def _rows(ctx: Context, study_id: str, *, ids: set[int] | None = None,
          optuna_ids: set[int] | None = None) -> list[Any]:
    """The study's rows: all of them, or those with an id in `ids` or an Optuna trial in `optuna_ids`."""
    with session_scope(ctx.sessions) as s:
        if ids is None:
            return list(s.execute(text(f"SELECT {_ROW_COLUMNS} FROM trials t WHERE t.study_id = :sid"),
                                  {"sid": study_id}).all())
        if not ids and not optuna_ids:
            return []
        return list(s.execute(text(f"""
            SELECT {_ROW_COLUMNS} FROM trials t
            WHERE t.study_id = :sid AND (t.id = ANY(:ids) OR t.optuna_trial_id = ANY(:otids))
        """), {"sid": study_id, "ids": sorted(ids), "otids": sorted(optuna_ids or ())}).all())


def _set_state(storage: optuna.storages.BaseStorage, trial_id: int, state: TrialState,
               values: list[float] | None = None) -> bool:
    try:
        return bool(storage.set_trial_state_values(trial_id, state, values))
    except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
        return False  # ended meanwhile (by the worker's own tell): nothing to repair


def _end_like_ours(ctx: Context, storage: optuna.storages.BaseStorage, t: Any, row: Any, study: _Study,
                   repairs: Repairs, label: str) -> None:
    ours = queue.reported_values(ctx.sessions, row.id)
    if any(t.intermediate_values.get(step) != v for step, v in ours.items()):
        added = optuna_bridge.sync_points(storage, t._trial_id, ours)
        if added:
            repairs.told.append(f"{label} #{row.number}: {added} intermediate value(s) Optuna lacked")
    if row.state == "running" or (row.state == "queued" and study.can_run):
        return  # in flight, or waiting for its next attempt
    if row.state == "complete" and row.value is not None and math.isfinite(row.value):
        state, values = TrialState.COMPLETE, [float(row.value)]
    elif row.state == "pruned":
        state = TrialState.PRUNED
        values = [float(row.last_value)] if row.last_value is not None and math.isfinite(row.last_value) else None
    else:
        state, values = TrialState.FAIL, None
    if _set_state(storage, t._trial_id, state, values):
        repairs.told.append(f"{label} #{row.number}: Optuna trial {t.number} RUNNING -> {state.name}")
        log.warning("%s #%d: Optuna trial %d was still RUNNING; now %s like ours (%s)", label, row.number,
                    t.number, state.name, row.state)


def _orphan(ctx: Context, storage: optuna.storages.BaseStorage, t: Any, by_id: dict[int, Any], study: _Study,
            repairs: Repairs, label: str, grace: float) -> None:
    attrs = t.system_attrs
    slot_id = attrs.get(optuna_bridge.SLOT_ATTR)
    slot = by_id.get(slot_id) if slot_id is not None else None
    if slot is None:
        if slot_id is None and not _older_than(t.datetime_start, grace):
            repairs.later.add(study.id)
            return  # untagged and young: someone else's ask in flight (looked at again after the grace)
    elif slot.state == "running" and slot.optuna_trial_id is None:
        return  # that slot's attempt (this lease's or the next one) records it, or adopts it, itself
    elif slot.state == "queued" and slot.optuna_trial_id is None and study.can_run:
        if _adopt(ctx, slot.id, t._trial_id):
            repairs.adopted.append(f"{label} #{slot.number}: Optuna trial {t.number}")
            log.warning("%s #%d: Optuna trial %d (asked by an attempt that died before recording it) goes back "
                        "to its slot", label, slot.number, t.number)
        return
    if _set_state(storage, t._trial_id, TrialState.FAIL):
        repairs.failed_orphans.append(f"{label}: Optuna trial {t.number}")
        log.warning("%s: Optuna trial %d belongs to no slot (its slot has another one or cannot run): failed",
                    label, t.number)


def _older_than(started: datetime | None, seconds: float) -> bool:
    return started is None or datetime.now() - started > timedelta(seconds=seconds)


def _adopt(ctx: Context, trial_row_id: int, optuna_trial_id: int) -> bool:
    with session_scope(ctx.sessions) as s:
        return s.execute(text("UPDATE trials SET optuna_trial_id = :otid WHERE id = :tid AND state = 'queued' "
                              "AND optuna_trial_id IS NULL RETURNING id"),
                         {"tid": trial_row_id, "otid": optuna_trial_id}).first() is not None


def _finish_left_over_work(ctx: Context, study: _Study, rows: list[Any]) -> None:
    """What a worker does after a trial ends, in case the one that ended it died first (`rows`: the trials that
    ended since the last round)."""
    for r in rows:
        if r.resume_key is not None and r.state in ENDED:
            retention.drop_resume_checkpoint(ctx, r.id)
    if study.status == "completed" or any(r.state == "complete" for r in rows):
        retention.apply(ctx, study.id, study.keep_top_k)


def collect_orphan_objects(ctx: Context, study_id: str, repairs: Repairs | None = None) -> list[str]:
    """Delete the objects under the study's trials/ folder that no row names and no live lease may still
    record, and the unfinished writes of attempts that are no longer live (a worker killed mid-upload). The
    listing comes before the rows are read, so an object uploaded meanwhile is never judged on rows older than
    it. Only the rows of the trials the objects belong to are read (an object is written under its own trial's
    number): O(objects kept), which retention keeps small."""
    prefix = f"{retention.study_prefix(study_id)}trials"
    try:
        keys = ctx.artifacts.list_keys(prefix)
        partial = ctx.artifacts.list_partial(prefix)  # writes cut short (a worker killed mid-upload)
    except StorageError as exc:
        log.warning("study %s: cannot list artifacts (%s); orphans are collected later", study_id, exc.message)
        return []
    if not keys and not partial:
        return []
    numbers = {_trial_number(study_id, k) for k in keys} | {_trial_number(study_id, k) for k in partial}
    with session_scope(ctx.sessions) as s:
        if None in numbers:  # an object outside the attempt layout: any row may name it
            rows = s.execute(text("SELECT number, state, lease_token, resume_key, checkpoint_key FROM trials "
                                  "WHERE study_id = :sid"), {"sid": study_id}).all()
        else:
            rows = s.execute(text("SELECT number, state, lease_token, resume_key, checkpoint_key FROM trials "
                                  "WHERE study_id = :sid AND number = ANY(:nums)"),
                             {"sid": study_id, "nums": sorted(n for n in numbers if n is not None)}).all()
    if repairs is not None:
        repairs.rows_read += len(rows)
    named = {k for r in rows for k in (r.resume_key, r.checkpoint_key) if k}
    live = {(r.number, r.lease_token.hex) for r in rows if r.state == "running" and r.lease_token is not None}
    deleted = []
    for key in keys:
        if key in named:
            continue
        owner = retention.attempt_of(study_id, key)
        if owner is not None and owner in live:
            continue  # a live attempt's upload, not recorded yet
        try:
            ctx.artifacts.delete(key)
        except StorageError as exc:
            log.warning("study %s: cannot delete orphan %s (%s)", study_id, key, exc.message)
            continue
        deleted.append(key)
    for name in partial:
        owner = retention.attempt_of(study_id, name)
        if owner is None or owner in live:
            continue  # a live attempt's write in progress (or one outside the attempt layout: left alone)
        try:
            ctx.artifacts.delete_partial(name)
        except StorageError as exc:
            log.warning("study %s: cannot delete unfinished write %s (%s)", study_id, name, exc.message)
            continue
        deleted.append(name)
    if deleted:
        log.info("study %s: deleted %d object(s) of dead or stale attempts", study_id, len(deleted))
        if repairs is not None:
            repairs.deleted_objects.extend(deleted)
    return deleted


def _trial_number(study_id: str, key: str) -> int | None:
    """The trial number of an object under the study's `trials/<number>/` folder, else None."""
    parts = key.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}/" != retention.study_prefix(study_id) or parts[2] != "trials":
        return None
    return int(parts[3]) if parts[3].isdigit() and len(parts[3]) < 10 else None


# ---------------------------------------------------------------- checking (for tests and operators)

_OURS_TO_OPTUNA = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL,
                   "running": TrialState.RUNNING, "queued": TrialState.RUNNING}


def disagreements(ctx: Context, study_id: str) -> list[str]:
    """Every way Optuna's trials disagree with ours (empty: they agree): each of our trials with an Optuna
    trial has the matching state (a queued one keeps a RUNNING trial for its next attempt; a trial that ran out
    of memory is PRUNED and infeasible in Optuna, FAIL also accepted), no Optuna trial is RUNNING that no
    running or queued slot of ours holds, and none belongs to no slot."""
    study = _study(ctx, study_id)
    assert study is not None, study_id
    storage = ctx.optuna_storage
    trials = {t._trial_id: t for t in storage.get_all_trials(storage.get_study_id_from_name(study.optuna_name),
                                                               deepcopy=False)}
    problems = []
    referenced = set()
    for r in _rows(ctx, study_id):
        if r.optuna_trial_id is None:
            if r.state not in ("queued", "failed") and r.kind != "confirm":  # confirm runs have none
                problems.append(f"#{r.number} is {r.state} without an Optuna trial")
            continue
        referenced.add(r.optuna_trial_id)
        t = trials.get(r.optuna_trial_id)
        if t is None:
            problems.append(f"#{r.number}: Optuna trial {r.optuna_trial_id} does not exist")
            continue
        expected = {_OURS_TO_OPTUNA[r.state]}
        if r.state == "failed" and (r.failure_reason or "").startswith("out of memory"):
            expected.add(TrialState.PRUNED)
        if t.state not in expected:
            problems.append(f"#{r.number} is {r.state}, its Optuna trial {t.number} is {t.state.name}")
    for t in trials.values():
        if t._trial_id not in referenced and t.state != TrialState.WAITING:
            problems.append(f"Optuna trial {t.number} ({t.state.name}) belongs to no trial of ours")
    return problems
