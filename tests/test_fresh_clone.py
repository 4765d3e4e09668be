"""As a new user would: a clean clone, a fresh virtualenv, the README's first command (on a small budget)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_scripts_demo_from_a_clean_clone(tmp_path: Path, embedded_home: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STSWEEP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(STSWEEP_HOME=str(embedded_home), HF_HUB_OFFLINE="1", COLUMNS="120")
    r = subprocess.run(["./scripts/demo", "--trials", "1", "--max-train-samples", "48", "--every-n-examples", "48",
                        "--port", str(port), "-o", str(tmp_path / "model")],
                       cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (clone / ".venv" / "bin" / "stsweep").exists(), "the demo set up its own virtualenv"
    assert "vs baseline" in r.stdout
    assert (tmp_path / "model" / "model.safetensors").is_file()
