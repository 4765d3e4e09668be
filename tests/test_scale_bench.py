"""bench/scale.py --quick runs end to end on real PostgreSQL, with real worker processes and a real API server,
and reports what issue 19 asks for: claim throughput and latency per process count, with and without Optuna,
the empty claims and duplicates, and every read's p50 / p95 at both shapes, with the goals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import admin_url

ROOT = Path(__file__).resolve().parents[1]
READS = {"list", "detail", "trials_first", "trials_deep", "changes", "metrics"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STSWEEP_BENCH_ADMIN_URL": admin_url()}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_claims_part_reports_throughput_latency_empty_claims_and_duplicates(quick: tuple[dict, str]) -> None:  # type: ignore[type-arg]
    result, stdout = quick
    runs = {(r["workers"], r["optuna"]): r for r in result["part_a"]}
    assert set(runs) == {(2, False), (2, True)}
    for r in runs.values():
        assert r["processes_reported"] == r["workers"] and r["errors"] == 0, r["error_samples"]
        assert r["claims"] > 0 and r["claims_per_s"] > 0
        assert 0 < r["claim"]["p50_ms"] <= r["claim"]["p99_ms"]
        assert r["finish"]["n"] == r["claims"]
        assert r["empty_claims_while_queued"] == 0, r  # the claim never comes back empty while a slot is queued
        assert r["duplicates"] and all(v == 0 for v in r["duplicates"].values()), r["duplicates"]
        assert r["connections_per_worker"] > 0
    with_optuna = runs[(2, True)]  # ask/tell measured, enqueued slots checked
    assert with_optuna["ask"]["n"] > 0 and with_optuna["tell"]["n"] > 0 and with_optuna["first_join_s"] is not None
    assert "enqueued_configurations_off_their_slot" in with_optuna["duplicates"]
    assert "claim p99 < 50 ms at 256 processes" in stdout and "empty*" in stdout


def test_reads_part_reports_every_read_at_both_shapes(quick: tuple[dict, str]) -> None:  # type: ignore[type-arg]
    result, stdout = quick
    shapes = {s["shape"]: s for s in result["part_b"]}
    assert set(shapes) == {"10x100", "1x1000"}
    for s in shapes.values():
        assert READS <= set(s["reads"]), s["reads"].keys()
        for read in s["reads"].values():
            assert read["n"] == 3 and 0 < read["p50_ms"] <= read["p95_ms"]
        assert s["counts"]["trials"].get("complete", 0) > 0 and s["counts"]["trials"].get("queued", 0) > 0
        assert s["bg_claims"] > 0 and s["bg_errors"] == 0
    assert shapes["10x100"]["counts"]["studies"] == {"running": 2, "completed": 8}
    assert "p95 < 50 ms" in stdout and "/metrics < 200 ms" in stdout
