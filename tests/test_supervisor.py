"""Supervision with real processes and signals: a killed child is restarted, a crash loop is reported once
with growing waits instead of spinning, a configuration error is not restarted, a child that ends by itself
stays ended; and `stsweep up` brings its API back after SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.local.supervisor import ChildSpec, Supervisor
from tests.faultkit import free_port, wait_for

PY = sys.executable


def _spec(name: str, code: str, *, clean_exit_ends: bool = False) -> ChildSpec:
    return ChildSpec(name, [PY, "-c", code], dict(os.environ), clean_exit_ends=clean_exit_ends)


def _run(supervisor: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.poll()
        time.sleep(0.02)


def test_restarts_crash_loops_and_exits_that_stay(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor([_spec("sleeper", "import time; time.sleep(120)"),
                      _spec("crasher", "import sys; sys.exit(1)"),
                      _spec("misconfigured", "import sys; sys.exit(2)"),
                      _spec("finisher", "import sys; sys.exit(0)", clean_exit_ends=True)],
                     base=0.2, cap=1.6, stable_seconds=30, crash_loop_after=4)
    sleeper, crasher, misconfigured, finisher = sup.children
    with caplog.at_level(logging.INFO, logger="stsweep.supervisor"):
        sup.start()
        first_pid = sleeper.proc.pid  # type: ignore[union-attr]
        _run(sup, 1.0)
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: (sup.poll(), sleeper.proc.pid != first_pid)[1], 10, "the killed child's restart",  # type: ignore[union-attr]
                 interval=0.02)
        _run(sup, 9.0)
    try:
        assert sleeper.exits == [-signal.SIGKILL] and sleeper.proc.poll() is None  # type: ignore[union-attr]
        assert misconfigured.final_code == 2 and misconfigured.restarts == 0
        assert finisher.final_code == 0 and finisher.restarts == 0
        # Waits 0.1-0.2, 0.2-0.4, 0.4-0.8, 0.8-1.6, then ~1.6 s: a handful of restarts in 10 s, never a spin.
        assert 5 <= len(crasher.exits) <= 12, crasher.exits
        assert crasher.crash_looping
        messages = [r.getMessage() for r in caplog.records]
        loops = [m for m in messages if "crasher is crash-looping" in m]
        assert len(loops) == 1 and "exit code 1" in loops[0], messages
        assert any("sleeper exited unexpectedly (signal SIGKILL" in m for m in messages)
        assert any("misconfigured exited with a usage or configuration error" in m for m in messages)
    finally:
        sup.stop(signal.SIGTERM, grace=5)
    assert sup.exit_code() == 2


def test_up_restarts_its_api_after_sigkill(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(STSWEEP_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen([str(Path(PY).with_name("stsweep")), "up", "--port", str(port), "--no-worker"],
                              env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "API token (shown once)" in log.read_text() or up.poll() is not None, 120, "stsweep up")
        assert up.poll() is None, log.read_text()
        api_pid = int(subprocess.run(["pgrep", "-f", f"service.cli serve --host 127.0.0.1 --port {port}"],
                                     capture_output=True, text=True).stdout.split()[0])
        os.kill(api_pid, signal.SIGKILL)

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(lambda: not ready(), 10, "the API to go down")
        wait_for(ready, 60, "the API to come back")
        assert up.poll() is None
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    output = log.read_text()
    assert "api exited unexpectedly (signal SIGKILL" in output and "api: restarting" in output, output[-3000:]
    assert output.rstrip().endswith("stopped"), output[-2000:]
