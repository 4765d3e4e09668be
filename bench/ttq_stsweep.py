"""Time-to-quality bench: one stsweep method end to end (methods c, d, e).

Our API in a subprocess over a fresh migrated database and a token (bench/stsweep_harness.py), `POST
/v1/studies` (the bench's search space, n_trials 200, one trial at a time), then one worker process (`python -m
workers --device cpu --exit-when-idle 5`) whose CPU seconds (user + sys, /proc/<pid>/stat) are polled every 0.5 s.
When they pass the budget the bench POSTs /v1/studies/{id}/stop (the running trial is interrupted and does not
count). The best-so-far curve comes from the trials table (finished_at and value of complete trials), mapped onto
the worker's CPU timeline. The winner (the best trial completed within the budget) is pulled over the API
(`StsweepClient.pull`), loaded with SentenceTransformer(path) and scored on the test subset by the bench.

Resumable checkpoints are set apart (STSWEEP_CHECKPOINT_EVERY_SECONDS=3600, see CHECKPOINT_EVERY_SECONDS): they
are due by wall time, so on a contended machine they cost several times more per CPU-second than on an idle one,
and the other methods have none; bench/faults.py measures them.
"""

from __future__ import annotations

import argparse
import bisect
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.ttq_data import (
    BATCH_SIZES,
    EPOCHS,
    LOSSES,
    LR_RANGE,
    MAX_SEQ_LENGTH,
    ROOT,
    TRAIN_SEED,
    WARMUP_RANGE,
    WEIGHT_DECAY_RANGE,
    BenchData,
    method_env,
    proc_cpu_seconds,
)

PRUNERS: dict[str, dict[str, Any]] = {
    "c": {"name": "median"},
    "d": {"name": "successive_halving"},
    "e": {"name": "median", "compare_at": "schedule_fraction"},
}
POLL_S = 0.5
CHECKPOINT_EVERY_SECONDS = 3600


def search_space() -> dict[str, Any]:
    return {
        "learning_rate": {"distribution": "float", "low": LR_RANGE[0], "high": LR_RANGE[1], "log": True},
        "per_device_train_batch_size": {"distribution": "categorical", "choices": list(BATCH_SIZES)},
        "num_train_epochs": {"distribution": "categorical", "choices": list(EPOCHS)},
        "warmup_ratio": {"distribution": "float", "low": WARMUP_RANGE[0], "high": WARMUP_RANGE[1]},
        "weight_decay": {"distribution": "float", "low": WEIGHT_DECAY_RANGE[0], "high": WEIGHT_DECAY_RANGE[1]},
        "loss": {"distribution": "categorical", "choices": list(LOSSES)},
        "max_seq_length": MAX_SEQ_LENGTH,
    }


def study_body(method: str, data: BenchData, seed: int) -> dict[str, Any]:
    return {
        "name": f"ttq-{method}",
        "task": "scored_pairs",
        "data": {"train": {"path": "ttq/train.jsonl"}, "eval": {"path": "ttq/dev.jsonl"}, "score_range": [0, 5]},
        "search_space": search_space(),
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": PRUNERS[method],
        # the whole dev subset is the eval subset: intermediate evaluations and the final dev score agree
        "evaluation": {"every_n_examples": data.sizes.every, "max_eval_samples": max(len(data.dev), 1)},
        "budget": {"n_trials": 200, "max_concurrent_trials": 1},
        "keep_top_k": 5,
        "seed": TRAIN_SEED,
    }


def cpu_at(timeline: list[tuple[float, float]], wall: float) -> float:
    """The worker's CPU seconds at wall time `wall`, interpolated on the polled timeline."""
    if not timeline:
        return 0.0
    walls = [w for w, _ in timeline]
    i = bisect.bisect_left(walls, wall)
    if i == 0:
        return timeline[0][1]
    if i >= len(timeline):
        return timeline[-1][1]
    (w0, c0), (w1, c1) = timeline[i - 1], timeline[i]
    return c0 + (c1 - c0) * (wall - w0) / (w1 - w0) if w1 > w0 else c1


def run_stsweep(method: str, data: BenchData, args: argparse.Namespace, work: Path, log: Any) -> dict[str, Any]:
    from sqlalchemy import text

    from bench.stsweep_harness import stsweep_stack
    from service.client.http import StsweepClient

    t_start = time.time()
    logdir = work / "logs"
    result: dict[str, Any] = {"trials": []}
    wenv = method_env(args.threads)
    # Resumable checkpoints (fault tolerance, costed in bench/faults.py) are due every 60 s of wall time by
    # default: on this contended machine that is every second evaluation, several times what an idle one pays
    # per CPU-second. Set apart here; the methods do not have them.
    wenv["STSWEEP_CHECKPOINT_EVERY_SECONDS"] = str(CHECKPOINT_EVERY_SECONDS)
    try:
        with stsweep_stack(work, "stsweep_ttq", {"ttq/train.jsonl": data.train, "ttq/dev.jsonl": data.dev},
                           wenv) as stack:
            ctx = stack.ctx
            worker: subprocess.Popen[bytes] | None = None
            timeline: list[tuple[float, float]] = []
            stopped_at: float | None = None
            try:
                client = StsweepClient(stack.base_url, stack.token, timeout=120)
                study_id = str(client.create_study(study_body(method, data, args.seed)).id)
                worker_log = logdir / "worker.log"
                with worker_log.open("wb") as out:
                    worker = subprocess.Popen(
                        [sys.executable, "-m", "workers", "--device", "cpu", "--exit-when-idle", "5"],
                        cwd=ROOT, env=stack.worker_env, stdout=out, stderr=subprocess.STDOUT)
                deadline = time.time() + args.budget * 6 + 600
                while worker.poll() is None and time.time() < deadline:
                    cpu = proc_cpu_seconds(worker.pid)
                    if cpu is not None:
                        timeline.append((time.time(), cpu))
                        if stopped_at is None and cpu >= args.budget:
                            stopped_at = time.time()
                            client.stop_study(study_id)
                            log(f"({method}) budget passed ({cpu:.0f} CPU-s): study stopped")
                    time.sleep(POLL_S)
                if worker.poll() is None:
                    log(f"({method}) worker still running at the deadline: killed")
                    worker.kill()
                rc = worker.wait()
                with ctx.engine.connect() as conn:
                    rows = conn.execute(text(
                        "SELECT number, state, value, params, examples_seen, planned_examples, "
                        "extract(epoch FROM started_at) AS s, extract(epoch FROM finished_at) AS f "
                        "FROM trials WHERE study_id = :s ORDER BY number"), {"s": study_id}).all()
                    points = conn.execute(text(
                        "SELECT t.number, iv.examples_seen, iv.value FROM intermediate_values iv JOIN trials t "
                        "ON t.id = iv.trial_id WHERE t.study_id = :s ORDER BY t.number, iv.examples_seen"),
                        {"s": study_id}).all()
                    baseline = conn.execute(text("SELECT baseline_value FROM studies WHERE id = :s"),
                                            {"s": study_id}).scalar()
                budget_wall = stopped_at if stopped_at is not None else float("inf")
                trials = []
                for r in rows:
                    if r.s is None:
                        continue  # never started
                    finished_cpu = cpu_at(timeline, float(r.f)) if r.f is not None else None
                    counts = r.f is not None and float(r.f) <= budget_wall and (finished_cpu or 0) <= args.budget
                    state = r.state if counts else "over_budget"
                    curve = [(int(n_ex), float(v)) for n, n_ex, v in points if n == r.number]
                    trials.append({
                        "number": int(r.number), "params": r.params or {}, "state": state,
                        "value": float(r.value) if r.value is not None and state == "complete" else None,
                        "examples_seen": int(r.examples_seen or 0), "planned_examples": int(r.planned_examples or 0),
                        "cpu_start": cpu_at(timeline, float(r.s)), "cpu_end": finished_cpu,
                        "examples": [e for e, _ in curve], "values": [v for _, v in curve], "test": None,
                    })
                done = [t for t in trials if t["state"] == "complete"]
                if done:
                    winner = max(done, key=lambda t: t["value"])
                    from sentence_transformers import SentenceTransformer

                    from bench.ttq_data import evaluator, value_of

                    path = client.pull(study_id, work / "winner", trial_number=winner["number"])
                    model = SentenceTransformer(str(path), device="cpu")
                    winner["test"] = value_of(evaluator(data.test, "test")(model))
                    log(f"({method}) winner #{winner['number']}: dev {winner['value']:.4f}, test {winner['test']:.4f}")
                client.close()
                result = {"trials": trials, "rc": rc, "wall": time.time() - t_start, "study_id": study_id,
                          "worker_cpu": timeline[-1][1] if timeline else None, "baseline": baseline,
                          "timeline": timeline[:: max(1, len(timeline) // 400)],
                          "log_tail": worker_log.read_text(errors="replace")[-3000:] if rc else ""}
                for t in trials:
                    log(f"({method}) #{t['number']} {t['state']} value={t['value']} cpu_end={t['cpu_end']} "
                        f"examples={t['examples_seen']}/{t['planned_examples']}")
            finally:
                if worker is not None and worker.poll() is None:
                    worker.kill()
                    worker.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
