"""Time to quality (issue 12, item 1): how much compute each way of searching needs to find a good model.

    .venv/bin/python bench/time_to_quality.py [--quick] [--methods abcde] [--budget 240] [--train-pairs 512]
    .venv/bin/python bench/time_to_quality.py --grid      # the replay grid, once (resumable), ~3,200 CPU-s
    .venv/bin/python bench/time_to_quality.py --replay [--seeds 50] [--budget 240]   # seconds, needs the grid

Real run: the methods one after another, each in its own process(es) with the same budget of CPU seconds
(user + sys of the training process: getrusage for (a) and (b), /proc/<pid>/stat of the worker polled every
0.5 s for stsweep), 2 torch threads and OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE set before torch is imported:

(a) random search, no pruning: Optuna's RandomSampler (ask/tell in memory), a plain SentenceTransformerTrainer per
    trial (a fresh model from disk), the dev score of the trained model at the end of each trial;
(b) `SentenceTransformerTrainer.hyperparameter_search(backend="optuna")` with `model_init` and Optuna's defaults
    (TPESampler, MedianPruner) pruning on `global_step` at eval_steps = 128 // 16 steps for every batch size;
(c) stsweep end to end (API subprocess, a fresh migrated database, one `python -m workers --device cpu` process, a
    study over HTTP): TPE + median pruning on examples seen;
(d) stsweep, successive halving on examples seen;
(e) stsweep, TPE + median pruning at equal fractions of the planned schedule (`pruner.compare_at:
    schedule_fraction`).

One search space for all: learning_rate log-uniform [1e-5, 3e-4], per_device_train_batch_size {16, 32, 64},
num_train_epochs {1, 2}, warmup_ratio [0, 0.2], weight_decay [0, 0.1], loss {CosineSimilarityLoss, CoSENTLoss};
max_seq_length 64. Data: seeded random STS-b subsets (train 512 pairs, --quick 256; dev 300, used for every
intermediate evaluation and the final dev score; test 500, for the winners only). An evaluation every 128 examples
(--quick 64). When a method passes its budget it stops (stsweep: POST /v1/studies/{id}/stop); a trial that
completes after that does not count. Per method: CPU seconds to reach (a)'s final best dev score, as a ratio to
(a)'s own (the headline; goal <= 0.4 for the best stsweep method), best dev score at the end, test score of its
winner (stsweep: the checkpoint pulled over the API, never retrained), trials started / completed / pruned,
examples trained.

Replay (--replay): the methods' samplers and pruners against the grid's recorded learning curves (--grid: 36
configurations, lr {2e-5, 6e-5, 2e-4} x batch {16, 32, 64} x epochs {1, 2} x loss, warmup 0.1, weight decay 0.01,
appended to bench/ttq_curves.jsonl), over --seeds seeds, in memory; the stsweep methods use stsweep's own
`make_sampler` / `make_pruner`. Also the bias analysis (is pruning at equal examples biased against longer
schedules?). Writes bench/time_to_quality.png (best dev so far vs CPU seconds; replay bands, real run dashed,
from the last real run's bench/ttq_real.json).

Exit status 0 whether or not the goal is met: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ttq_data import BenchData, DataSizes, method_env  # noqa: E402

CURVES = ROOT / "bench" / "ttq_curves.jsonl"
REAL = ROOT / "bench" / "ttq_real.json"
PLOT = ROOT / "bench" / "time_to_quality.png"
GOAL = 0.4
METHOD_NAMES = {
    "a": "(a) random search, no pruning",
    "b": "(b) hyperparameter_search (TPE+median on global_step)",
    "c": "(c) stsweep TPE + median on examples",
    "d": "(d) stsweep successive halving on examples",
    "e": "(e) stsweep TPE + median at schedule fraction",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sizes_of(args: argparse.Namespace) -> DataSizes:
    return DataSizes(train=args.train_pairs, dev=args.dev_pairs, test=args.test_pairs, every=args.every, seed=args.seed)


# ------------------------------------------------------------------ one method, in this process


def run_method(args: argparse.Namespace) -> int:
    """Child mode: run one method, write its trials (JSON) to --out."""
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    data = BenchData.load(sizes_of(args))
    work = Path(tempfile.mkdtemp(prefix=f"ttq_{args.method}_"))
    if args.method == "a":
        from bench.ttq_train import run_random

        records = run_random(data, args.budget, args.seed, work, log)
    elif args.method == "b":
        from bench.ttq_train import run_hpsearch

        records = run_hpsearch(data, args.budget, args.seed, work, log)
    else:
        raise SystemExit(f"--method {args.method}: not an in-process method")
    Path(args.out).write_text(json.dumps({"trials": [r.to_json() for r in records]}))
    return 0


def run_grid_mode(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from bench.ttq_train import run_grid

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    sizes = sizes_of(args)
    done = set()
    if CURVES.exists():
        for line in CURVES.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("sizes") == sizes.__dict__:
                    done.add(row["key"])
    log(f"grid: {len(done)} configurations already in {CURVES.name}")
    data = BenchData.load(sizes)
    work = Path(tempfile.mkdtemp(prefix="ttq_grid_"))

    def emit(key: str, rec: Any) -> None:
        row = {"key": key, "sizes": sizes.__dict__, **rec.to_json()}
        with CURVES.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    run_grid(data, done, work, emit, log)
    return 0


# ------------------------------------------------------------------ the real run


def spawn_method(method: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """(a) / (b) in a child process of their own."""
    cmd = [sys.executable, str(Path(__file__)), "--method", method, "--out", str(out), "--budget", str(args.budget),
           "--train-pairs", str(args.train_pairs), "--dev-pairs", str(args.dev_pairs), "--test-pairs",
           str(args.test_pairs), "--every", str(args.every), "--seed", str(args.seed), "--threads", str(args.threads)]
    env = {**os.environ, **method_env(args.threads)}
    t = time.time()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    result = json.loads(out.read_text()) if out.exists() else {"trials": []}
    result.update(rc=rc, wall=time.time() - t)
    return result


def real_run(args: argparse.Namespace) -> int:
    from bench.ttq_report import print_real

    sizes = sizes_of(args)
    results: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="ttq_real_"))
    t_all = time.time()
    for m in args.methods:
        log(f"{METHOD_NAMES[m]}: budget {args.budget:.0f} CPU-s ...")
        if m in "ab":
            results[m] = spawn_method(m, args, work / f"{m}.json")
        else:
            from bench.ttq_stsweep import run_stsweep

            data = BenchData.load(sizes)
            results[m] = run_stsweep(m, data, args, work / m, log)
        log(f"{METHOD_NAMES[m]}: done in {results[m].get('wall', 0):.0f} s wall")
    doc = {"args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))},
           "sizes": sizes.__dict__, "results": results, "wall": time.time() - t_all,
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = Path(args.real_out) if args.real_out else (None if args.quick else REAL)
    if out is not None:
        out.write_text(json.dumps(doc, indent=1))
    print_real(doc, METHOD_NAMES, GOAL)
    return 0


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced real run: budget 90 CPU-s, 256 train pairs, every 64")
    ap.add_argument("--grid", action="store_true", help="train the replay grid (resumable) into bench/ttq_curves.jsonl")
    ap.add_argument("--replay", action="store_true", help="replay the methods against the grid over --seeds seeds")
    ap.add_argument("--methods", default="abcde", help="which methods, in this order")
    ap.add_argument("--budget", type=float, default=None, help="CPU seconds per method (default 240, --quick 90)")
    ap.add_argument("--train-pairs", type=int, default=None, help="random STS-b train pairs (512, --quick 256)")
    ap.add_argument("--dev-pairs", type=int, default=300)
    ap.add_argument("--test-pairs", type=int, default=500)
    ap.add_argument("--every", type=int, default=None, help="examples between evaluations (128, --quick 64)")
    ap.add_argument("--seed", type=int, default=1, help="data and sampler seed")
    ap.add_argument("--seeds", type=int, default=50, help="replay: seeds per method")
    ap.add_argument("--budgets", type=lambda v: [float(x) for x in v.split(",") if x.strip()], default=[],
                    help="replay: also scan these budgets (CPU-s, comma-separated), a table and a plot panel")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-out", default=None, help="where to write the real run's JSON (default bench/ttq_real.json;"
                    " --quick: nowhere)")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.budget = args.budget if args.budget is not None else (90.0 if args.quick else 240.0)
    args.train_pairs = args.train_pairs or (256 if args.quick else 512)
    args.every = args.every or (64 if args.quick else 128)
    os.environ.update(method_env(args.threads))  # before anything imports torch
    if args.method:
        return run_method(args)
    if args.grid:
        return run_grid_mode(args)
    if args.replay:
        from bench.ttq_replay import replay_main

        return replay_main(args, CURVES, REAL, PLOT, METHOD_NAMES, GOAL)
    return real_run(args)


if __name__ == "__main__":
    sys.exit(main())
