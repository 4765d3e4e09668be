"""As a new user would: a clean clone, a fresh virtualenv, the README's first command (on a small budget)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.timeout(1500)  # a fresh virtualenv (torch included) and the demo: minutes on a loaded machine
def test_scripts_demo_from_a_clean_clone(tmp_path: Path, embedded_home: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STSWEEP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(STSWEEP_HOME=str(embedded_home), HF_HUB_OFFLINE="1", COLUMNS="120")
    # Its own process group: if the test ends early (a timeout), the demo's server and worker go with it.
    demo = subprocess.Popen(["./scripts/demo", "--trials", "1", "--max-train-samples", "48", "--every-n-examples",
                             "48", "--port", str(port), "-o", str(tmp_path / "model")],
                            cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = demo.communicate(timeout=1200)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        else:
            try:
                os.killpg(demo.pid, signal.SIGKILL)  # anything the demo left behind
            except ProcessLookupError:
                pass
    assert demo.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert (clone / ".venv" / "bin" / "stsweep").exists(), "the demo set up its own virtualenv"
    assert "vs baseline" in stdout
    assert (tmp_path / "model" / "model.safetensors").is_file()
