"""Under CI=true a skip fails the run unless it names a missing machine capability (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PROBE = '''
import pytest

def test_skips_for_a_missing_file():
    pytest.skip("the STS benchmark is not beside the project")

def test_skips_for_no_gpu():
    pytest.skip("no GPU on this machine")
'''


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), str(probe)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_under_ci_an_unaccepted_skip_fails(tmp_path: Path) -> None:
    r = run_probe(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    assert "1 failed, 1 skipped" in r.stdout and "test_skips_for_a_missing_file" in r.stdout


def test_outside_ci_both_skip(tmp_path: Path) -> None:
    r = run_probe(tmp_path, None)
    assert r.returncode == 0 and "2 skipped" in r.stdout, r.stdout
