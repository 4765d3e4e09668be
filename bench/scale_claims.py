"""Part (a) of bench/scale.py: N worker processes claiming one study, as real workers do, without training.

Each process (forked from the bench, so the imports are shared) builds its own engine (a pool of one connection,
one overflow) and, with Optuna, its own Optuna storage (one connection in use), registers as a worker, and then
loops, as `workers/loop.py` does with the training left out:

    queue.claim(sessions, worker_id, lease_seconds)
    [Optuna] workers.sampling.trial_params(...)      # check_lease, ask_for_slot, attach, sample, set_params
    sleep(--trial-ms)                                # the simulated trial
    queue.finish(sessions, lease, Finish(complete, value, metrics), failure_streak_to_pause)
    [Optuna] study.tell(trial, value, skip_if_finished=True)

A claim that comes back empty is counted as "empty while queued" when the study still has a queued slot right
after it (slots only leave the queue during a run, and the cap is the number of processes, so it always allows
one more): such a claim found nothing although a slot was waiting. The process then claims again at once (a
real worker would sleep `poll_seconds`; the implied idle time is reported). The run ends after --seconds or when
no slot is queued. Duplicates: claims of a slot already claimed (by the processes' own records and by the
`attempts` column), Optuna trials tagged with the same slot, and enqueued configurations not on their slot.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time
import traceback
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.fill import STUDY_BODY
from service.context import Context
from service.store import optuna_bridge, queue, studies
from service.store.db import make_engine, make_sessionmaker, session_scope

LEASE_SECONDS = 600.0  # no lease runs out during a run: nothing is reaped, every slot is claimed once at most
ENQUEUED = [  # slots 0..3 carry these (enqueue_trials order); checked after the Optuna runs
    {"learning_rate": 2e-5, "per_device_train_batch_size": 16, "warmup_ratio": 0.1, "loss": "CoSENTLoss"},
    {"learning_rate": 5e-5, "per_device_train_batch_size": 32, "warmup_ratio": 0.0, "loss": "CoSENTLoss"},
    {"learning_rate": 1e-5, "per_device_train_batch_size": 64, "warmup_ratio": 0.2,
     "loss": "CosineSimilarityLoss"},
    {"learning_rate": 8e-5, "per_device_train_batch_size": 16, "warmup_ratio": 0.05,
     "loss": "CosineSimilarityLoss"},
]


@dataclass(frozen=True)
class ClaimJob:
    """What one claimer process does."""

    database_url: str
    optuna_schema: str
    study_id: str | None  # None: any study (the background claimers of part b)
    use_optuna: bool
    trial_ms: float
    seconds: float
    out: Path


def study_body(n_slots: int, cap: int, name: str) -> dict[str, Any]:
    body = json.loads(json.dumps(STUDY_BODY))
    body["name"] = name
    body["budget"] = {"n_trials": n_slots, "max_concurrent_trials": cap}
    body["enqueue_trials"] = ENQUEUED
    return body


def _has_queued(sessions: Any, study_id: str | None) -> bool:
    sql = ("SELECT EXISTS (SELECT 1 FROM trials WHERE state = 'queued' AND study_id = :s)" if study_id else
           "SELECT EXISTS (SELECT 1 FROM trials t JOIN studies st ON st.id = t.study_id "
           "WHERE t.state = 'queued' AND st.status IN ('queued', 'running'))")
    with session_scope(sessions) as s:
        return bool(s.execute(text(sql), {"s": study_id}).scalar_one())


def claimer(job: ClaimJob, ready: Any, go: Event, stop: Event) -> None:
    """One worker process: set up (untimed), wait for `go`, then claim / simulate / finish until the end."""
    rec: dict[str, Any] = {"pid": os.getpid(), "claimed": [], "claim_ms": [], "empty_ms": [], "finish_ms": [],
                           "ask_ms": [], "tell_ms": [], "empty_while_queued": 0, "errors": [], "join_s": None}
    optuna_bridge.storage.cache_clear()  # the bench's storage (and its connections) stay the bench's
    try:
        engine = make_engine(job.database_url, pool_size=1)
        sessions = make_sessionmaker(engine)
        worker_id = queue.register_worker(sessions, socket.gethostname(), os.getpid(), "cpu")
        ostudy = spec = faults = None
        if job.use_optuna:
            from workers.faults import Faults
            from workers.sampling import trial_params

            assert job.study_id is not None
            faults = Faults()
            spec, oname, _ = studies.load_spec(sessions, job.study_id)
            t = time.perf_counter()
            ostudy = optuna_bridge.load_study(optuna_bridge.storage(job.database_url, job.optuna_schema), oname, spec)
            ostudy.trials  # noqa: B018 - the first read of the study's history, as a worker's first join does
            rec["join_s"] = time.perf_counter() - t
    except Exception:  # noqa: BLE001 - reported by the parent
        rec["errors"].append(traceback.format_exc(limit=3))
        ready.put(os.getpid())
        job.out.write_text(json.dumps(rec))
        return
    ready.put(os.getpid())
    go.wait()
    rec["start"] = time.time()
    deadline = time.monotonic() + job.seconds
    while time.monotonic() < deadline and not stop.is_set():
        try:
            t = time.perf_counter()
            got = queue.claim(sessions, worker_id, LEASE_SECONDS)
            dt = (time.perf_counter() - t) * 1000
            if got is None:
                rec["empty_ms"].append(dt)
                if not _has_queued(sessions, job.study_id):
                    break
                rec["empty_while_queued"] += 1
                continue
            claim = got[0]
            rec["claim_ms"].append(dt)
            rec["claimed"].append(claim.lease.trial_id)
            trial = None
            if ostudy is not None and claim.kind == "search":
                t = time.perf_counter()
                trial, _params = trial_params(sessions, ostudy, spec, claim, faults.db)  # type: ignore[arg-type,union-attr]
                rec["ask_ms"].append((time.perf_counter() - t) * 1000)
            time.sleep(job.trial_ms / 1000)
            value = 0.8 + (claim.number % 997) / 10_000
            t = time.perf_counter()
            queue.finish(sessions, claim.lease,
                         queue.Finish(state="complete", value=value, examples_seen=1024,
                                      metrics={"spearman_cosine": value, "examples_seen": 1024}),
                         pause_after_streak=5)
            rec["finish_ms"].append((time.perf_counter() - t) * 1000)
            if trial is not None:
                t = time.perf_counter()
                ostudy.tell(trial, value, skip_if_finished=True)  # type: ignore[union-attr]
                rec["tell_ms"].append((time.perf_counter() - t) * 1000)
        except Exception:  # noqa: BLE001 - counted and shown; the loop goes on
            rec["errors"].append(traceback.format_exc(limit=3))
            if len(rec["errors"]) > 50:
                break
    rec["end"] = time.time()
    job.out.write_text(json.dumps(rec))
    engine.dispose()


def fork_context() -> Any:
    """Children are forked: they share the bench's imports instead of importing torch-free stsweep 256 times."""
    return mp.get_context("fork")


class Claimers:
    """N claimer processes: start (all set up), go, join; the records they wrote."""

    def __init__(self, jobs: list[ClaimJob]) -> None:
        ctx = fork_context()
        self.jobs = jobs
        self.ready = ctx.Queue()
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.procs = [ctx.Process(target=claimer, args=(j, self.ready, self.go, self.stop), daemon=True)
                      for j in jobs]

    def start(self, timeout: float = 600) -> float:
        """Start them all and wait until each is set up; returns the set-up time."""
        import gc

        t = time.perf_counter()
        gc.collect()
        gc.freeze()  # the children's copy-on-write pages stay shared
        for p in self.procs:
            p.start()
        for _ in self.procs:
            self.ready.get(timeout=timeout)
        return time.perf_counter() - t

    def release(self) -> float:
        self.go.set()
        return time.time()

    def finish(self, timeout: float, stop_first: bool = False) -> list[dict[str, Any]]:
        """Wait up to `timeout` for them to end by themselves (or, `stop_first`, tell them to stop now)."""
        if stop_first:
            self.stop.set()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(1.0, deadline - time.monotonic()))
        self.stop.set()
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        return [json.loads(j.out.read_text()) for j in self.jobs if j.out.exists()]


def connections(ctx: Context) -> int:
    """Client connections to this database now (the bench's own included: one)."""
    with session_scope(ctx.sessions) as s:
        return int(s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND backend_type = 'client backend'")).scalar_one())


def duplicates(ctx: Context, study_id: str, records: list[dict[str, Any]], use_optuna: bool,
               optuna_schema: str) -> dict[str, int]:
    """Every way a slot could have been handed out twice, counted (each must be 0)."""
    claimed = [tid for r in records for tid in r["claimed"]]
    out = {"claims_of_a_claimed_slot": len(claimed) - len(set(claimed))}
    with session_scope(ctx.sessions) as s:
        out["slots_claimed_twice"] = int(s.execute(text(
            "SELECT count(*) FROM trials WHERE study_id = :s AND attempts > 1"), {"s": study_id}).scalar_one())
        if not use_optuna:
            return out
        out["optuna_trials_sharing_a_slot"] = int(s.execute(text(f"""
            SELECT coalesce(sum(n - 1), 0) FROM (
                SELECT count(*) AS n FROM "{optuna_schema}".trial_system_attributes a
                JOIN "{optuna_schema}".trials ot ON ot.trial_id = a.trial_id
                JOIN studies st ON st.id = :s
                JOIN "{optuna_schema}".studies os ON os.study_id = ot.study_id AND os.study_name = st.optuna_study_name
                WHERE a.key = :k GROUP BY a.value_json) g"""), {"s": study_id, "k": optuna_bridge.SLOT_ATTR}
        ).scalar_one())
        out["slots_sharing_an_optuna_trial"] = int(s.execute(text(
            "SELECT count(*) - count(DISTINCT optuna_trial_id) FROM trials WHERE study_id = :s "
            "AND optuna_trial_id IS NOT NULL"), {"s": study_id}).scalar_one())
        rows = s.execute(text("SELECT number, params FROM trials WHERE study_id = :s AND number < :k "
                              "AND params IS NOT NULL"), {"s": study_id, "k": len(ENQUEUED)}).all()
        out["enqueued_configurations_off_their_slot"] = sum(
            1 for number, params in rows
            if {k: params.get(k) for k in ENQUEUED[number]} != ENQUEUED[number])
    return out
