"""Scored sentence pairs that ship with the repository (the demo data set in `service/local/demo_data`), for
tests that train, upload or evaluate: they run on a bare clone. Scores are given on a 0..5 scale (the files
store 0..1)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parents[1] / "service" / "local" / "demo_data"
_FILES = {"train": "train.jsonl", "dev": "dev.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}


def pair_rows(split: str, n: int | None, seed: int) -> list[dict[str, Any]]:
    """Rows of a bundled split as {sentence1, sentence2, score (0..5)}: `n` random rows (seeded) in file order,
    or all of them when n is None."""
    rows: list[dict[str, Any]] = []
    with (DEMO_DIR / _FILES[split]).open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.append({"sentence1": r["sentence1"], "sentence2": r["sentence2"], "score": round(r["score"] * 5, 4)})
    if n is None or n >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_sts_format(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A headerless TSV with the score and the sentences at fixed positions: genre/file/year/id/score then the
    two sentences, and extra trailing fields on every third row (what positional columns must cope with)."""
    lines = []
    for i, r in enumerate(rows):
        fields = ["main-captions", "MSRvid", "2012test", f"{i:04d}", f"{r['score']:.3f}", r["sentence1"],
                  r["sentence2"]]
        if i % 3 == 2:
            fields += ["extra-source", "2016"]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
