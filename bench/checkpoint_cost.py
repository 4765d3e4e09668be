"""Issue 22 item 2: what a resumable checkpoint costs the training thread, old path against new, in one run.

    .venv/bin/python bench/checkpoint_cost.py [--seconds 120] [--interval 20] [--pairs 4000] [--threads 2]
        [--order old,new]

Trains all-MiniLM-L6-v2 with the worker's own trainer set-up (workers/training.py `set_up_trial`: CoSENTLoss,
batch 16, lr 2e-5, evaluation every 1024 examples on a 200-pair dev subset) on a random (seeded) slice of STS-b
(../shared/data/stsbenchmark, tab-separated, no header, csv.QUOTE_NONE) for --seconds per path, with a resumable
checkpoint every --interval seconds (fixed, not adaptive, so both paths take the same number), uploaded to a real
LocalArtifactStore in a temporary folder:

- old: the trainer's own synchronous `_save_checkpoint` (model, optimizer, scheduler, RNG, trainer state) and our
  progress files on the training thread; the upload (tar, sha256, fsync) on a background thread, one at a time
  (what main did before issue 22);
- new: the state copied in memory on the training thread (workers/checkpoint_snapshot.py); serialising, writing
  and uploading on the writer thread (workers/checkpoint_writer.py), one in flight, the next skipped if busy.

Prints, per path: checkpoints taken, the training thread's seconds inside them (total, mean, max), their share of
the training time, the examples per second trained, and the new path's writer-thread CPU seconds; then the
ratios new/old, and the interval the adaptive policy (2% budget, maximum 60 s) would choose from the new path's
measurements. The machine is shared and noisy: read the ratios and shares, not the absolute seconds. A
measurement, not a test: exits 0 either way.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STS_DIR = ROOT.parent / "shared" / "data" / "stsbenchmark"


def sts_rows(split: str, n: int, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with (STS_DIR / f"sts-{split}.csv").open(encoding="utf-8", newline="") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(fields) >= 7:
                rows.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])})
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))  # the files are genre-ordered
    return [rows[i] for i in keep]


@dataclass
class PathResult:
    name: str
    checkpoints: list[float] = field(default_factory=list)  # training-thread seconds of each
    train_seconds: float = 0.0
    examples: int = 0
    uploads: int = 0
    skipped: int = 0
    mib: float = 0.0
    policy: Any = None  # new path: the policy's smoothed measurements

    @property
    def spent(self) -> float:
        return sum(self.checkpoints)

    @property
    def share(self) -> float:
        return self.spent / self.train_seconds if self.train_seconds else 0.0

    @property
    def rate(self) -> float:
        return self.examples / self.train_seconds if self.train_seconds else 0.0


class StoreHooks:
    """TrialHooks that upload to a real LocalArtifactStore and keep only the newest object (as the record does)."""

    def __init__(self, store: Any, interval: float, result: PathResult) -> None:
        self.store, self.interval, self.result = store, interval, result
        self.last_key: str | None = None

    def report(self, examples_seen: int, value: float) -> bool:
        return False

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        self.result.examples = examples_seen

    def checkpoint_interval(self) -> float:
        return self.interval

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event | None = None) -> None:
        info = self.store.put_dir(f"bench/resume-{examples_seen}.tar", folder)
        if abandon is not None and abandon.is_set():
            self.store.delete(info.key)
            return
        if self.last_key is not None:
            self.store.delete(self.last_key)
        self.last_key = info.key
        self.result.uploads += 1
        self.result.mib = info.size / 2**20

    def interrupted(self) -> bool:
        return False


def run_path(name: str, prepared: Any, work: Path, store: Any, args: argparse.Namespace) -> PathResult:
    from transformers import TrainerCallback

    from workers.checkpoint_policy import CheckpointPolicy
    from workers.contract import TrialRun
    from workers.training import set_up_trial

    result = PathResult(name)
    hooks = StoreHooks(store, args.interval, result)
    run = TrialRun(study_id="bench", trial_number=0, spec=prepared.spec,
                   params={"learning_rate": 2e-5, "per_device_train_batch_size": 16, "loss": "CoSENTLoss"},
                   work_dir=work / name)
    setup = set_up_trial(run, prepared, hooks, "cpu")
    callback, trainer = setup.callback, setup.trainer
    callback.policy = CheckpointPolicy(args.interval, adaptive=False)
    old_uploads: list[threading.Thread] = []
    progress_seconds: list[float] = []

    if name == "old":
        trainer.checkpoint_sink = None  # the trainer's own synchronous _save_checkpoint

        class OldOnSave(TrainerCallback):
            """What TrialCallback.on_save did before issue 22: progress files on the training thread, then the
            upload on a background thread after the previous one finished."""

            def on_save(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
                started = time.perf_counter()
                callback.last_checkpoint = time.monotonic()  # what take_checkpoint does on the new path
                folder = Path(targs.output_dir) / f"checkpoint-{state.global_step}"
                callback.progress.save(folder, callback.examples_seen, state.global_step)
                for t in old_uploads:
                    t.join()
                old_uploads.clear()
                t = threading.Thread(target=lambda: (hooks.save_checkpoint(folder, callback.examples_seen),
                                                     shutil.rmtree(folder, ignore_errors=True)), daemon=True)
                t.start()
                old_uploads.append(t)
                progress_seconds.append(time.perf_counter() - started)

        trainer.add_callback(OldOnSave())

    real_save = trainer._save_checkpoint

    def timed_save(model: Any, trial: Any) -> None:
        started = time.perf_counter()
        real_save(model, trial)
        result.checkpoints.append(time.perf_counter() - started)

    trainer._save_checkpoint = timed_save  # type: ignore[method-assign]

    class StopAfter(TrainerCallback):
        def __init__(self) -> None:
            self.started = 0.0

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.started = time.monotonic()

        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.monotonic() - self.started >= args.seconds:
                control.should_training_stop = True
            return control

    trainer.add_callback(StopAfter())
    started = time.monotonic()
    trainer.train()
    result.train_seconds = time.monotonic() - started
    result.examples = callback.examples_seen
    for t in old_uploads:
        t.join()
    callback.writer.drain()
    callback._measure_writer()  # the last job's writer CPU time, into the policy's estimate
    result.checkpoints = [c + (progress_seconds[i] if i < len(progress_seconds) else 0.0)
                          for i, c in enumerate(result.checkpoints)]
    result.skipped = callback.skipped
    if name == "new":
        result.policy = CheckpointPolicy(60.0, copy_seconds=callback.policy.copy_seconds,
                                         writer_seconds=callback.policy.writer_seconds)
    callback.release()
    return result


def report(results: dict[str, PathResult], args: argparse.Namespace) -> None:
    print(f"\ncheckpoint cost: all-MiniLM-L6-v2, {args.pairs} random STS-b train pairs, {args.seconds:.0f} s of "
          f"training per path, a checkpoint every {args.interval:.0f} s (fixed), torch threads {args.threads}")
    print(f"{'path':<5} {'ckpts':>5} {'uploaded':>8} {'skipped':>7} {'train-thread s':>14} {'mean s':>7} "
          f"{'max s':>6} {'train s':>8} {'share':>7} {'ex/s':>6} {'MiB':>5}")
    for r in results.values():
        mean = statistics.mean(r.checkpoints) if r.checkpoints else 0.0
        top = max(r.checkpoints) if r.checkpoints else 0.0
        print(f"{r.name:<5} {len(r.checkpoints):>5} {r.uploads:>8} {r.skipped:>7} {r.spent:>14.2f} {mean:>7.3f} "
              f"{top:>6.3f} {r.train_seconds:>8.1f} {100 * r.share:>6.2f}% {r.rate:>6.1f} {r.mib:>5.0f}")
    old, new = results.get("old"), results.get("new")
    if old is None or new is None or not old.checkpoints or not new.checkpoints:
        return
    per_old, per_new = statistics.mean(old.checkpoints), statistics.mean(new.checkpoints)
    print(f"new/old: training-thread seconds per checkpoint {per_new / per_old:.3f} "
          f"({per_old / per_new:.0f}x less); share of training {new.share / old.share:.3f}; "
          f"examples per second {new.rate / old.rate:.3f}")
    policy = new.policy
    if policy is not None and policy.cost is not None:
        print(f"new path, smoothed: copy {policy.copy_seconds:.3f} s on the training thread, writer thread "
              f"{(policy.writer_seconds or 0):.2f} s CPU per checkpoint; the adaptive policy (2% budget, maximum "
              f"60 s) would checkpoint every {policy.interval():.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="training seconds per path")
    ap.add_argument("--interval", type=float, default=20.0, help="fixed checkpoint interval, seconds")
    ap.add_argument("--pairs", type=int, default=4000, help="random STS-b train pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--order", default="old,new")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (STS_DIR / "sts-train.csv").is_file():
        raise SystemExit(f"the STS benchmark is not in {STS_DIR}")
    import torch

    torch.set_num_threads(args.threads)
    from service.artifacts.local import LocalArtifactStore
    from service.core.spec import StudySpec
    from workers.prepared import PreparedStudy

    work = Path(tempfile.mkdtemp(prefix="stsweep-ckpt-bench-"))
    try:
        for name, split, n, seed in (("train", "train", args.pairs, 1), ("dev", "dev", 400, 2)):
            (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sts_rows(split, n, seed)))
        spec = StudySpec.model_validate({
            "name": "checkpoint-cost", "task": "scored_pairs", "seed": 42,
            "data": {"train": {"path": "train.jsonl"}, "eval": {"path": "dev.jsonl"}, "score_range": [0, 5]},
            "evaluation": {"every_n_examples": 1024, "max_eval_samples": 200},
            "search_space": {"num_train_epochs": 1, "warmup_ratio": 0.1},
        })
        prepared = PreparedStudy(spec, lambda ref: work / str(ref.path), "cpu")
        store = LocalArtifactStore(work / "store")
        results = {name: run_path(name, prepared, work, store, args) for name in args.order.split(",")}
        report(results, args)
        if args.json is not None:
            args.json.write_text(json.dumps({n: {"checkpoints": r.checkpoints, "train_seconds": r.train_seconds,
                                                 "examples": r.examples, "uploads": r.uploads, "skipped": r.skipped}
                                             for n, r in results.items()}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
