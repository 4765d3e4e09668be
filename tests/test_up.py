"""`stsweep up` on the embedded database: API, dashboard and a CPU worker come up, print the URL and a token, and
Ctrl-C (SIGINT) stops everything quietly: the worker, the API and the embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_readme import _postgres_running_in, assert_quiet

pytestmark = pytest.mark.slow  # starts a worker process (imports torch)


def test_up_serves_and_ctrl_c_stops_everything_quietly(embedded_home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(STSWEEP_HOME=str(embedded_home), HF_HUB_OFFLINE="1", COLUMNS="120", PYTHONUNBUFFERED="1")
    log = embedded_home / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen([str(Path(sys.executable).with_name("stsweep")), "up", "--port", str(port),
                               "--gpus", "none"], env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "API token (shown once): " not in log.read_text():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        token = log.read_text().split("API token (shown once): ")[1].split()[0]
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        headers = {"Authorization": f"Bearer {token}"}
        while not [w for w in httpx.get(f"{url}/v1/workers", headers=headers, timeout=5).json()["items"]
                   if w["status"] in ("idle", "busy")]:
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    output = log.read_text()
    assert output.rstrip().endswith("stopped"), output[-2000:]
    assert "Traceback" not in output
    assert_quiet(output)
    assert not _postgres_running_in(embedded_home / "pgdata"), "the embedded server stopped with `up`"
