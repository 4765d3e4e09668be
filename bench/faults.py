"""Issue 10: one study on STS-b subsets under a schedule of faults, with two workers, and what it cost.

Two worker processes (`python -m workers --gpus none --trials-per-gpu 2`, the per-GPU supervisor on the CPU,
which restarts killed children) run one study against a private PostgreSQL cluster (pg_createcluster) and a
local artifact store. Meanwhile the bench SIGKILLs a training worker at random moments (`--kills`, at least 20)
and restarts the database `--db-restarts` times (alternately shorter and longer than the lease). At the end it
prints:

- trials lost (slots that never ended), duplicates (a configuration sampled twice, or a point Optuna and our
  tables disagree on), trials failed by faults, attempts used;
- training examples redone because of faults: for every attempt that lost its lease, the examples it had trained
  past its last resumable checkpoint (from the trial's history), as a share of all examples trained;
- recovery time after each fault (median, max): from the kill, or from the database being back, until every trial
  that was training then trains again (past the point it had reached under its lease, or past its checkpoint under
  the next attempt's), or has finished;
- the time one resumable checkpoint takes from the worker's logs (since issue 22 written and uploaded beside
  training: the training thread only copies the state in memory, bench/checkpoint_cost.py), and the checkpoint
  interval that time would suggest were it all on the training thread.

Data: random (seeded) subsets of STS-b read from ../shared/data/stsbenchmark (tab-separated, no header, score in
column 5, sentences in 6 and 7, read with csv.QUOTE_NONE). A measurement, not a test: it exits 0 either way.

    .venv/bin/python bench/faults.py [--trials 10] [--train 640] [--every 64] [--kills 20] [--db-restarts 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.ttq_data import read_sts_file as read_sts  # noqa: E402
from service.context import Context  # noqa: E402
from service.core.spec import StudySpec  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import migrate, optuna_bridge, reconcile, studies  # noqa: E402
from service.store.db import session_scope  # noqa: E402

STSB = ROOT.parent / "shared" / "data" / "stsbenchmark"
# The newest PostgreSQL installed the Debian way (pg_createcluster needs its major version).
PG = str(max((int(p.name) for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()), default=15))
# The worker's log line; since issue 22 the seconds are the writer thread's (write, upload, record) beside training.
CHECKPOINT_LINE = re.compile(r"resumable checkpoint at (\d+) examples \((\d+) MiB, ([0-9.]+) s[;)]")


# ---------------------------------------------------------------- data


def write_subset(src: Path, dest: Path, n: int, seed: int) -> int:
    rows = read_sts(src)
    keep = random.Random(seed).sample(rows, min(n, len(rows)))  # random: the files are ordered by genre
    dest.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    return len(keep)


# ---------------------------------------------------------------- the database


class Cluster:
    def __init__(self) -> None:
        self.name = f"stsweep_bench_{os.getpid()}_{secrets.token_hex(3)}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/stsweep"

    def run(self, *args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True)

    def create(self) -> None:
        self.run("pg_createcluster", PG, self.name, "-p", str(self.port), "--", "--auth=trust")
        self.start()
        self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c", "CREATE DATABASE stsweep")
        migrate.upgrade(self.url)
        optuna_bridge.ensure_schema(self.url, "optuna")

    def start(self) -> None:
        self.run("pg_ctlcluster", PG, self.name, "start")

    def stop(self) -> None:
        self.run("pg_ctlcluster", PG, self.name, "stop", "-m", "fast")

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", PG, self.name], capture_output=True)


# ---------------------------------------------------------------- faults and recovery


@dataclass
class Fault:
    kind: str  # "kill" | "db restart"
    at: float  # when recovery is timed from (the kill; the database back up)
    detail: str
    watch: dict[int, tuple[str, int]] = field(default_factory=dict)  # trial id -> (lease, examples_seen) then
    recovered_at: float | None = None

    @property
    def recovery(self) -> float | None:
        return None if self.recovered_at is None else self.recovered_at - self.at


def query(ctx: Context, sql: str, **params: Any) -> list[Any] | None:
    """Rows, or None while the database is down (the bench's own reads ride out the outage too)."""
    try:
        with session_scope(ctx.sessions) as s:
            return list(s.execute(text(sql), params).all())
    except Exception:  # noqa: BLE001 - down, restarting
        return None


def training(ctx: Context) -> dict[int, tuple[int, str, int]]:
    """Trials training now: trial id -> (worker pid, lease, examples_seen)."""
    got = query(ctx, """SELECT t.id, w.pid, CAST(t.lease_token AS text) AS lease, t.examples_seen
                        FROM trials t JOIN workers w ON w.id = t.worker_id
                        WHERE t.state = 'running' AND t.examples_seen > 0 AND t.lease_expires_at > now()""")
    return {r.id: (r.pid, r.lease, r.examples_seen) for r in got or []}


def check_recovery(ctx: Context, faults: list[Fault]) -> None:
    """A fault is recovered from once every trial that was training then trains again: under the same lease past
    the point it had reached (an outage it rode out), or under a new lease past the checkpoint it resumed from
    (its next attempt), or it has finished."""
    open_ = [f for f in faults if f.recovered_at is None and f.at <= time.monotonic()]
    if not open_:
        return
    got = query(ctx, """SELECT id, state, examples_seen, coalesce(resume_examples, 0) AS resumed,
                               CAST(lease_token AS text) AS lease, lease_expires_at > now() AS live FROM trials""")
    if got is None:
        return
    now = {r.id: r for r in got}

    def back(trial: int, lease: str, reached: int) -> bool:
        r = now[trial]
        if r.state in ("complete", "pruned", "failed"):
            return True
        if r.state != "running" or not r.live:
            return False
        return r.examples_seen > (reached if r.lease == lease else r.resumed)

    for f in open_:
        if all(back(t, lease, reached) for t, (lease, reached) in f.watch.items() if t in now):
            f.recovered_at = time.monotonic()


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


# ---------------------------------------------------------------- the run


def study_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "faults-bench",
        "task": "scored_pairs",
        "data": {"train": {"path": "sts/train.jsonl"}, "eval": {"path": "sts/dev.jsonl"},
                 "test": {"path": "sts/test.jsonl"}, "score_range": [0, 5]},
        "search_space": {
            "learning_rate": {"distribution": "float", "low": 1e-5, "high": 1e-4, "log": True},
            "per_device_train_batch_size": {"distribution": "categorical", "choices": [16, 32]},
            "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2},
            "max_seq_length": 64, "num_train_epochs": 1, "loss": "CoSENTLoss"},
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 4},
        "pruner": {"name": "median", "n_startup_trials": 3},
        "evaluation": {"every_n_examples": args.every, "max_eval_samples": args.eval_samples},
        "budget": {"n_trials": args.trials, "max_concurrent_trials": 2},
        "max_attempts": args.max_attempts,
        "keep_top_k": 2,
    }


def worker_env(args: argparse.Namespace, url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update({"STSWEEP_DATABASE_URL": url, "STSWEEP_HOME": str(home), "STSWEEP_ARTIFACT_ROOT": str(home / "artifacts"),
                "STSWEEP_DATA_ROOT": str(home / "data"), "STSWEEP_LEASE_SECONDS": str(args.lease),
                "STSWEEP_HEARTBEAT_SECONDS": str(args.heartbeat), "STSWEEP_REAPER_SECONDS": "5",
                "STSWEEP_CHECKPOINT_EVERY_SECONDS": str(args.checkpoint_every),
                "STSWEEP_RESTART_BACKOFF_MAX_SECONDS": "10", "STSWEEP_POLL_SECONDS": "1",
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="stsweep-faults-bench-"))
    (work / "data" / "sts").mkdir(parents=True)
    sizes = {name: write_subset(STSB / f"sts-{split}.csv", work / "data" / "sts" / f"{name}.jsonl", n, seed)
             for name, split, n, seed in (("train", "train", args.train, 1), ("dev", "dev", args.eval, 2),
                                          ("test", "test", args.test, 3))}
    cluster = Cluster()
    cluster.create()
    settings = Settings(database_url=cluster.url, home=work, artifact_root=str(work / "artifacts"),
                        data_root=work / "data", _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, cluster.url)
    spec = StudySpec.model_validate(study_body(args))
    study_id = studies.new_study_id()
    optuna_bridge.create_study(ctx.optuna_storage, f"stsweep-{study_id}", spec)
    studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {})
    log_path = work / "workers.log"
    rng = random.Random(args.seed)
    faults: list[Fault] = []
    started = time.monotonic()
    with log_path.open("wb") as out:
        sup = subprocess.Popen([sys.executable, "-m", "workers", "--gpus", "none", "--trials-per-gpu", "2"], cwd=ROOT,
                               env=worker_env(args, cluster.url, work), stdout=out, stderr=subprocess.STDOUT)
    restarts_at = {round(args.kills * (i + 1) / (args.db_restarts + 1)) for i in range(args.db_restarts)}
    db_restarts = 0
    status = "running"
    try:
        next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * args.kill_every
        while status not in ("completed", "failed"):
            time.sleep(0.5)
            check_recovery(ctx, faults)
            got = query(ctx, "SELECT status FROM studies WHERE id = :s", s=study_id)
            status = got[0].status if got else status
            kills = sum(1 for f in faults if f.kind == "kill")
            if time.monotonic() < next_fault or kills >= args.kills and db_restarts >= args.db_restarts:
                continue
            now_training = training(ctx)
            if kills in restarts_at and db_restarts < args.db_restarts and now_training:
                longer = db_restarts % 2 == 1
                down = args.lease + 10 if longer else max(2.0, args.lease / 3)
                watch = {t: (lease, seen) for t, (_pid, lease, seen) in now_training.items()}
                cluster.stop()
                time.sleep(down)
                cluster.start()
                db_restarts += 1
                faults.append(Fault("db restart", time.monotonic(), f"{down:.0f} s down "
                                    f"({'longer' if longer else 'shorter'} than the {args.lease:g} s lease)", watch))
                restarts_at.discard(kills)
            elif now_training and kills < args.kills:
                alive = set(children(sup.pid))
                mine = [(t, pid, lease, seen) for t, (pid, lease, seen) in now_training.items() if pid in alive]
                if mine:
                    trial, pid, lease, seen = rng.choice(mine)
                    if subprocess.run(["kill", "-9", str(pid)], capture_output=True).returncode == 0:
                        faults.append(Fault("kill", time.monotonic(), f"pid {pid} at {seen} examples",
                                            {trial: (lease, seen)}))
            next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * args.kill_every
        deadline = time.monotonic() + 120  # the last faults' recovery, and the test-split score
        while time.monotonic() < deadline and (any(f.recovered_at is None for f in faults) or not query(
                ctx, "SELECT 1 FROM studies WHERE id = :s AND test_value IS NOT NULL", s=study_id)):
            time.sleep(0.5)
            check_recovery(ctx, faults)
    finally:
        wall = time.monotonic() - started
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=120)
            except subprocess.TimeoutExpired:
                sup.kill()
    result = measure(ctx, study_id, faults, log_path.read_text(errors="replace"), wall, args, sizes)
    ctx.close()
    optuna_bridge.storage.cache_clear()
    cluster.drop()
    if args.keep:
        result["work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def measure(ctx: Context, study_id: str, faults: list[Fault], log: str, wall: float, args: argparse.Namespace,
            sizes: dict[str, int]) -> dict[str, Any]:
    reconcile.reconcile(ctx)  # what the reaper would do next anyway; disagreements are counted after it
    trials = query(ctx, """SELECT id, number, state, attempts, params, examples_seen, history, failure_reason
                           FROM trials WHERE study_id = :s ORDER BY number""", s=study_id) or []
    study = (query(ctx, "SELECT status, test_value, baseline_value FROM studies WHERE id = :s", s=study_id) or [None])[0]
    ended = [t for t in trials if t.state in ("complete", "pruned", "failed")]
    configs = [json.dumps(t.params, sort_keys=True) for t in trials if t.params is not None]
    wasted = sum(max(0, (h.get("examples_seen") or 0) - (h.get("resume_examples") or 0))
                 for t in trials for h in t.history if h["event"] == "lease expired")
    useful = sum(t.examples_seen for t in trials)
    recoveries = [f.recovery for f in faults if f.recovery is not None]
    costs = [(int(m.group(2)), float(m.group(3))) for m in CHECKPOINT_LINE.finditer(log)]
    seconds = [c for _, c in costs]
    best = (query(ctx, "SELECT max(value) AS v FROM trials WHERE study_id = :s AND state = 'complete'", s=study_id)
            or [None])[0]
    return {
        "data": sizes,
        "wall_seconds": round(wall, 1),
        "kills": sum(1 for f in faults if f.kind == "kill"),
        "db_restarts": [f.detail for f in faults if f.kind == "db restart"],
        "trials": len(trials),
        "trials_lost": args.trials - len(ended),
        "duplicate_configurations": len(configs) - len(set(configs)),
        "optuna_disagreements": reconcile.disagreements(ctx, study_id),
        "failed_by_faults": sum(1 for t in trials if t.state == "failed"),
        "failure_reasons": [t.failure_reason for t in trials if t.state == "failed"],
        "states": {s: sum(1 for t in trials if t.state == s) for s in ("complete", "pruned", "failed", "queued",
                                                                         "running")},
        "attempts_used": sum(t.attempts for t in trials),
        "attempts_max": max((t.attempts for t in trials), default=0),
        "max_attempts": args.max_attempts,
        "history_events": _count(h["event"] for t in trials for h in t.history),
        "examples_trained": useful + wasted,
        "examples_redone": wasted,
        "wasted_percent": round(100 * wasted / max(1, useful + wasted), 2),
        "recovery_seconds": {"n": len(recoveries), "unrecovered": len(faults) - len(recoveries),
                             "median": round(statistics.median(recoveries), 1) if recoveries else None,
                             "max": round(max(recoveries), 1) if recoveries else None,
                             "kill_median": _median(f.recovery for f in faults if f.kind == "kill"),
                             "db_restart": [round(f.recovery, 1) if f.recovery is not None else None
                                            for f in faults if f.kind == "db restart"]},
        "faults": [{"kind": f.kind, "detail": f.detail, "recovery": round(f.recovery, 1) if f.recovery else None}
                   for f in faults],
        "checkpoint": {"n": len(costs), "mib": _median(float(m) for m, _ in costs),
                       "seconds_median": _median(seconds), "seconds_max": max(seconds) if seconds else None},
        "study": {"status": study.status if study else None, "best": best.v if best else None,
                  "baseline": study.baseline_value if study else None, "test": study.test_value if study else None},
        "settings": {"lease": args.lease, "heartbeat": args.heartbeat, "checkpoint_every": args.checkpoint_every,
                     "every_n_examples": args.every},
    }


def _median(values: Any) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def report(r: dict[str, Any]) -> None:
    c, rec = r["checkpoint"], r["recovery_seconds"]
    print(f"\nfaults bench: {r['trials']} trials on STS-b subsets {r['data']}, 2 workers, {r['wall_seconds'] / 60:.1f} min")
    print(f"faults: {r['kills']} SIGKILLs, {len(r['db_restarts'])} database restarts ({'; '.join(r['db_restarts'])})")
    print(f"trials lost:              {r['trials_lost']}")
    print(f"duplicates:               {r['duplicate_configurations']} configurations, "
          f"{len(r['optuna_disagreements'])} Optuna disagreements")
    print(f"trials failed by faults:  {r['failed_by_faults']}  (states {r['states']})")
    print(f"attempts used:            {r['attempts_used']} over {r['trials']} trials (max {r['attempts_max']} of "
          f"{r['max_attempts']}); history {r['history_events']}")
    print(f"examples redone:          {r['examples_redone']} of {r['examples_trained']} trained "
          f"({r['wasted_percent']}% wasted)")
    print(f"recovery after a fault:   median {rec['median']} s, max {rec['max']} s over {rec['n']} faults "
          f"(kills: median {rec['kill_median']} s; database restarts: {rec['db_restart']}); "
          f"not recovered: {rec['unrecovered']}")
    print(f"one resumable checkpoint: {c['mib']} MiB, median {c['seconds_median']} s, max {c['seconds_max']} s "
          f"over {c['n']} (write + upload, beside training)")
    if c["seconds_median"]:
        cost = c["seconds_median"]
        print(f"checkpoint interval for <= 5% overhead: {20 * cost:.0f} s; Young's optimum sqrt(2 C MTBF): "
              + ", ".join(f"{math.sqrt(2 * cost * mtbf):.0f} s (a worker lost every {mtbf // 60} min)"
                          for mtbf in (900, 3600, 4 * 3600)))
    s = r["study"]
    print(f"study {s['status']}: best {s['best']}, baseline {s['baseline']}, test {s['test']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--train", type=int, default=640, help="random STS-b train pairs")
    ap.add_argument("--eval", type=int, default=400, help="random STS-b dev pairs")
    ap.add_argument("--eval-samples", type=int, default=100, help="the eval subset of each evaluation")
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--every", type=int, default=64, help="evaluate every N training examples")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--db-restarts", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=40.0, help="mean seconds between faults")
    ap.add_argument("--lease", type=float, default=20.0)
    ap.add_argument("--heartbeat", type=float, default=4.0)
    ap.add_argument("--checkpoint-every", type=float, default=10.0)
    ap.add_argument("--max-attempts", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data, artifacts, workers.log)")
    args = ap.parse_args()
    result = run(args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
