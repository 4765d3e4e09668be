"""Study operations: create (idempotent), read (summaries and trial pages from our own tables, never through
Optuna's `get_trials`), and the pause / resume / stop / delete state changes."""

from __future__ import annotations

import hashlib
import math
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.store import queue, quotas, study_check, trial_counts, trial_pages, winner
from service.store.baseline_job import MAX_BASELINE_ATTEMPTS
from service.store.db import session_scope
from service.core.access import DEFAULT_PROJECT
from service.core.errors import Conflict, NotFound
from service.core.schemas import (
    Baseline,
    BestTrial,
    Page,
    Progress,
    RunningTrial,
    StudyPublic,
    TestScore,
    TrialPublic,
)
from service.store.eta import ExampleTotals, estimate
from service.store.ranking import BEST_ORDER_SQL, RANKED_SQL
from service.core.spec import StudySpec
from service.core.states import TRIAL_STATES  # noqa: F401  (re-exported: callers read the states here)
from service.store.trial_rows import TRIAL_COLUMNS, trials_public

def new_study_id() -> str:
    return "st_" + secrets.token_hex(8)


def request_hash(spec: StudySpec) -> str:
    # Fields added later are left out while unset, so a body hashes as it did before they existed.
    unset = {name for name in ("confirm", "warm_start_from", "project") if getattr(spec, name) is None}
    if spec.precision == "auto":
        unset.add("precision")
    body = spec.model_dump(mode="json", exclude=unset)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Created:
    study_id: str
    optuna_name: str
    created: bool  # False: an earlier request with the same Idempotency-Key made it


def find_idempotent(factory: sessionmaker[Session], key: str, body_hash: str, project: str) -> str | None:
    """The study an earlier request of `project` with this Idempotency-Key made (keys are per project: one
    project's keys tell nothing of another's)."""
    with session_scope(factory) as s:
        return _idempotent(s, key, body_hash, project)


def _idempotent(s: Session, key: str, body_hash: str, project: str) -> str | None:
    row = s.execute(text("SELECT id, request_hash FROM studies WHERE project = :p AND idempotency_key = :k"),
                    {"k": key, "p": project}).first()
    if row is None:
        return None
    if row.request_hash != body_hash:
        raise Conflict("Idempotency-Key was already used with a different study body", field="Idempotency-Key")
    return str(row.id)


def insert_study(factory: sessionmaker[Session], study_id: str, optuna_name: str, spec: StudySpec,
                 idempotency_key: str | None, dataset_ids: dict[str, str], body_hash: str | None = None, *,
                 project: str = DEFAULT_PROJECT) -> Created:
    """Store the study (in `project`) and its budget as queued slots, in one transaction, within the project's
    quotas on active studies and trials (QuotaExceeded otherwise, and nothing is stored: service/store/quotas.py).
    `body_hash`: the request's hash when the stored spec differs from the posted one (warm_start_from enqueues
    configurations)."""
    body_hash = body_hash or request_hash(spec)
    try:
        with session_scope(factory) as s:
            limits = quotas.hold(s, project, quotas.COUNTS)
            if limits is not None and idempotency_key is not None:
                # A request with the same key that was let in first made the study: this is its repeat, not new work.
                existing = _idempotent(s, idempotency_key, body_hash, project)
                if existing is not None:
                    return Created(existing, "", created=False)
            quotas.check_counts(s, limits, studies=1, trials=quotas.study_trials(spec))
            s.execute(
                text("""INSERT INTO studies (id, name, spec, optuna_study_name, idempotency_key, request_hash,
                            n_trials, max_concurrent_trials, max_attempts, timeout_seconds, direction, project)
                        VALUES (:id, :name, CAST(:spec AS jsonb), :oname, :key, :hash, :n, :maxc, :maxa, :timeout,
                                :direction, :project)"""),
                {"id": study_id, "project": project, "name": spec.name, "spec": spec.model_dump_json(), "oname": optuna_name,
                 "key": idempotency_key, "hash": body_hash, "n": spec.budget.n_trials,
                 "maxc": spec.budget.max_concurrent_trials, "maxa": spec.max_attempts,
                 "timeout": spec.budget.timeout_seconds, "direction": spec.objective.direction},
            )
            queue.create_slots(s, study_id, spec.budget.n_trials)
            for role, dataset_id in dataset_ids.items():
                s.execute(text("INSERT INTO study_datasets (study_id, dataset_id, role) VALUES (:s, :d, :r)"),
                          {"s": study_id, "d": dataset_id, "r": role})
    except IntegrityError:
        # Two requests with one Idempotency-Key raced: the other one won.
        if idempotency_key is not None:
            existing = find_idempotent(factory, idempotency_key, body_hash, project)
            if existing is not None:
                return Created(existing, "", created=False)
        raise
    return Created(study_id, optuna_name, created=True)


# ------------------------------------------------------------------ reading

_STUDY_COLUMNS = """id, name, project, status, status_reason, spec, created_at, started_at, finished_at, n_trials,
    direction, baseline_value, baseline_subset_value, baseline_attempts,
    coalesce(baseline_lease_expires_at > now(), false) AS baseline_leased,
    test_metric, test_value, test_trial_number, test_rescore,
    optuna_study_name, timeout_seconds,
    CASE WHEN isfinite(started_at) AND isfinite(coalesce(finished_at, now()))
         THEN extract(epoch FROM coalesce(finished_at, now())) - extract(epoch FROM started_at) END AS elapsed"""
# (Epoch arithmetic, not an interval: a row holding an extreme time still reads, see study_sql.py.)


def _baseline(r: Any) -> Baseline | None:
    """None until the study starts (or a value lands); then pending, ready, or failed (no value, its attempts
    spent and the last lease run out, or the study failed)."""
    if r.baseline_value is not None or r.baseline_subset_value is not None:
        return Baseline(value=r.baseline_value, subset_value=r.baseline_subset_value, status="ready")
    if r.started_at is None:
        return None
    spent = r.baseline_attempts >= MAX_BASELINE_ATTEMPTS and not r.baseline_leased
    return Baseline(value=None, subset_value=None,
                    status="failed" if spent or r.status == "failed" else "pending")


def load_spec(factory: sessionmaker[Session], study_id: str) -> tuple[StudySpec, str, str]:
    """(spec, optuna study name, status); CorruptStudy when the stored spec no longer validates."""
    with session_scope(factory) as s:
        row = s.execute(text("SELECT spec, optuna_study_name, status FROM studies WHERE id = :id"),
                        {"id": study_id}).first()
    if row is None:
        raise NotFound(f"study {study_id} not found", field="study_id")
    return study_check.parse_spec(row.spec), row.optuna_study_name, row.status


def _snapshot(s: Session) -> None:
    """One read-only snapshot for the whole summary: the counts and the running rows are read by different
    statements and must agree."""
    s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


def get_study(factory: sessionmaker[Session], study_id: str, *, with_spec: bool = True) -> StudyPublic:
    with session_scope(factory) as s:
        _snapshot(s)
        row = s.execute(text(f"SELECT {_STUDY_COLUMNS} FROM studies WHERE id = :id"), {"id": study_id}).first()
        if row is None:
            raise NotFound(f"study {study_id} not found", field="study_id")
        return _summarize(s, [row], with_spec=with_spec)[0]


def project_of(factory: sessionmaker[Session], study_id: str) -> str | None:
    """The study's project (None: no such study)."""
    with session_scope(factory) as s:
        found = s.execute(text("SELECT project FROM studies WHERE id = :id"), {"id": study_id}).scalar_one_or_none()
    return None if found is None else str(found)


def list_studies(factory: sessionmaker[Session], offset: int, limit: int,
                 status: str | None = None, project: str | None = None) -> Page[StudyPublic]:
    """Studies newest first, of one `project` (None: every project), of one `status` (None: any)."""
    conditions = [c for c, on in (("status = :status", status), ("project = :project", project)) if on]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    params = {"status": status, "project": project, "limit": limit, "offset": offset}
    with session_scope(factory) as s:
        _snapshot(s)
        total = s.execute(text(f"SELECT count(*) FROM studies {where}"), params).scalar_one()
        rows = s.execute(text(f"SELECT {_STUDY_COLUMNS} FROM studies {where} ORDER BY created_at DESC, id "
                              "LIMIT :limit OFFSET :offset"), params).all()
        items = _summarize(s, rows, with_spec=False)
    return Page[StudyPublic](items=items, total=total, offset=offset, limit=limit)


def _summarize(s: Session, rows: list[Any], *, with_spec: bool) -> list[StudyPublic]:
    """Summaries for many studies with a fixed number of queries (no per-study round trips), none of which reads
    every trial: counts and sums from trial_counts, the best trial by an index probe, the running trials."""
    ids = [r.id for r in rows]
    if not ids:
        return []
    # The per-study sums kept by triggers (trial_counts.py): a few rows per study, however many trials it has.
    sums = trial_counts.study_sums(s, ids)
    counts = {i: sums[i].counts() for i in ids}
    ckpt_bytes = {i: sum(st.checkpoint_bytes for st in sums[i].by_state.values()) for i in ids}
    examples: dict[str, ExampleTotals] = {i: ExampleTotals() for i in ids}
    for i in ids:
        for state, st in sums[i].by_state.items():
            examples[i].add(state, st.trials, st.examples, st.seen_of_planned, st.planned)
    best: dict[str, BestTrial] = {}
    # The first trial per study in (objective, number) order, by a LIMIT 1 (a top-1 heap) per study: a
    # DISTINCT ON sorted every complete trial with its params and spilled to disk (bench/api_bench.py).
    for b in s.execute(text(f"""
            SELECT st.id AS study_id, b.number, b.value, b.params
            FROM studies st CROSS JOIN LATERAL (
                SELECT t.number, t.value, t.params FROM trials t
                WHERE t.study_id = st.id AND {RANKED_SQL}
                ORDER BY {BEST_ORDER_SQL}
                LIMIT 1) b
            WHERE st.id = ANY(:ids)
        """), {"ids": ids}):
        best[b.study_id] = BestTrial(trial_number=b.number, value=b.value, params=b.params)
    won = winner.winners(s, ids, best, {r.id for r in rows if _spec_of(r).get("confirm")})
    running: dict[str, list[RunningTrial]] = {i: [] for i in ids}
    # Running trials (at most the workers' worth, through ix_trials_claim) add what the counts leave to them.
    for r in s.execute(text("SELECT study_id, number, examples_seen, planned_examples, eta_seconds, "
                            "coalesce(checkpoint_bytes, 0) AS nbytes FROM trials "
                            "WHERE study_id = ANY(:ids) AND state = 'running' ORDER BY number"), {"ids": ids}):
        running[r.study_id].append(RunningTrial(number=r.number, examples_seen=r.examples_seen,
                                                planned_examples=r.planned_examples, eta_seconds=r.eta_seconds))
        planned = r.planned_examples or 0
        examples[r.study_id].add("running", 0, r.examples_seen, r.examples_seen if planned > 0 else 0,
                                 planned if planned > 0 else 0)
        ckpt_bytes[r.study_id] += int(r.nbytes)
    out = []
    for r in rows:
        c = counts[r.id]
        finished = c["complete"] + c["pruned"] + c["failed"]
        budget = max(r.n_trials, finished + c["queued"] + c["running"]) if r.status != "completed" else finished
        out.append(StudyPublic(
            id=r.id, name=r.name, project=r.project, status=r.status, status_reason=r.status_reason, created_at=r.created_at,
            started_at=r.started_at, finished_at=r.finished_at, counts=c, best=best.get(r.id), winner=won.get(r.id),
            baseline=_baseline(r),
            test=TestScore(metric=r.test_metric, value=r.test_value, trial_number=r.test_trial_number,
                           rescoring=r.test_rescore) if r.test_value is not None else None,
            progress=_progress(r, finished, budget, running[r.id], examples[r.id]),
            objective={"metric": _objective_metric(r), "direction": r.direction},
            checkpoint_bytes=int(ckpt_bytes.get(r.id, 0)),
            spec=_spec_of(r) if with_spec else None,
        ))
    return out


def _spec_of(r: Any) -> dict[str, Any]:
    """The stored spec, read defensively: a row written by hand may hold any JSON (such a study is quarantined
    when anything tries to run it, service/store/quarantine.py), and reading it must still answer."""
    return r.spec if isinstance(r.spec, dict) else {}


def _objective_metric(r: Any) -> str | None:
    objective = _spec_of(r).get("objective")
    metric = objective.get("metric") if isinstance(objective, dict) else None
    return metric if isinstance(metric, str) else None


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _progress(r: Any, finished: int, budget: int, running: list[RunningTrial], examples: ExampleTotals
              ) -> Progress:
    budget = max(budget, 1)
    partial = sum(min(1.0, t.examples_seen / t.planned_examples) for t in running if t.planned_examples)
    fraction = min(1.0, (finished + partial) / budget) if r.status != "completed" else 1.0
    elapsed = _finite(float(r.elapsed)) if r.elapsed is not None else None
    eta, bound = None, None
    if r.status in ("running", "queued"):
        eta, bound = estimate(elapsed=elapsed, fraction=fraction, slots_left=max(0, budget - finished - len(running)),
                              running=running, totals=examples,
                              timeout_seconds=_finite(r.timeout_seconds))
    return Progress(trials_finished=finished, n_trials=budget, fraction=round(fraction, 4), running=running,
                    elapsed_seconds=elapsed, eta_seconds=eta, eta_bound=bound)


# Trial pages (OFFSET or keyset cursor) live in trial_pages.py.
SortKey = trial_pages.SortKey
list_trials = trial_pages.list_trials


def get_trial(factory: sessionmaker[Session], study_id: str, number: int) -> TrialPublic:
    with session_scope(factory) as s:
        _require_study(s, study_id)
        rows = s.execute(text(f"SELECT {TRIAL_COLUMNS} FROM trials WHERE study_id = :sid AND number = :n"),
                         {"sid": study_id, "n": number}).all()
        if not rows:
            raise NotFound(f"study {study_id} has no trial {number}", field="number")
        return trials_public(s, rows)[0]


def _require_study(s: Session, study_id: str) -> None:
    if s.execute(text("SELECT 1 FROM studies WHERE id = :id"), {"id": study_id}).first() is None:
        raise NotFound(f"study {study_id} not found", field="study_id")


def delete_study(factory: sessionmaker[Session], study_id: str) -> str:
    """Delete the study's rows; returns its Optuna study name (the caller drops Optuna's side and artifacts)."""
    with session_scope(factory) as s:
        name = s.execute(text("DELETE FROM studies WHERE id = :id RETURNING optuna_study_name"),
                         {"id": study_id}).scalar_one_or_none()
    if name is None:
        raise NotFound(f"study {study_id} not found", field="study_id")
    return str(name)
