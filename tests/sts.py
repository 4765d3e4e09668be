"""The STS benchmark files beside the project (/work/shared/data/stsbenchmark), for tests that need real data."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

STS_DIR = Path(__file__).resolve().parents[2] / "shared/data/stsbenchmark"
_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}


def sts_available() -> bool:
    return (STS_DIR / _FILES["train"]).is_file()


def sts_rows(split: str, n: int | None, seed: int) -> list[dict[str, Any]]:
    """Rows of an STS benchmark split as {sentence1, sentence2, score (raw 0..5)}; `n` random rows (seeded), in
    file order, or all rows when n is None. The files are tab-separated without a header, score in the 5th
    field and the sentences in the 6th and 7th; some rows carry extra trailing fields."""
    path = STS_DIR / _FILES[split]
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", newline="") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(fields) < 7:
                continue
            rows.append({"sentence1": fields[5], "sentence2": fields[6], "score": float(fields[4])})
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tsv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] = ("sentence1", "sentence2",
                                                                                  "score")) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
