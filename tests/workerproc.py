"""Real worker processes for tests: `python -m workers` with the test's settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from service.settings import Settings
from tests.conftest import ROOT


def worker_env(settings: Settings, **overrides: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    values: dict[str, object] = {
        "DATABASE_URL": settings.database_url, "HOME": settings.home, "ARTIFACT_ROOT": settings.artifact_root,
        "DATA_ROOT": settings.data_root, "LEASE_SECONDS": settings.lease_seconds,
        "HEARTBEAT_SECONDS": settings.heartbeat_seconds, "POLL_SECONDS": settings.poll_seconds,
        "CHECKPOINT_EVERY_SECONDS": settings.checkpoint_every_seconds,
        "SHUTDOWN_GRACE_SECONDS": settings.shutdown_grace_seconds,
        "FAILURE_STREAK_TO_PAUSE": settings.failure_streak_to_pause,
        "REAPER_SECONDS": settings.reaper_seconds, "FAULT_RETRY_SECONDS": settings.fault_retry_seconds,
        "RESTART_BACKOFF_MAX_SECONDS": settings.restart_backoff_max_seconds,
        "S3_ENDPOINT_URL": settings.s3_endpoint_url, "S3_ACCESS_KEY_ID": settings.s3_access_key_id,
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key else None,
    }
    values.update({k.upper(): v for k, v in overrides.items()})
    env.update({f"STSWEEP_{k}": str(v) for k, v in values.items() if v is not None})
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2")})
    return env


def start_worker(settings: Settings, log_path: Path, *args: str, **overrides: object) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "workers", "--device", "cpu", *args], cwd=ROOT,
                            env=worker_env(settings, **overrides), stdout=log, stderr=subprocess.STDOUT)


def run_until_idle(settings: Settings, log_path: Path, timeout: float, *args: str,
                   **overrides: object) -> None:
    """Run one worker with `--exit-when-idle 3` until it exits; it must exit 0 within `timeout` seconds (the
    log's tail is the failure message). Killed if it does not."""
    proc = start_worker(settings, log_path, "--exit-when-idle", "3", *args, **overrides)
    try:
        rc = proc.wait(timeout=timeout)
        assert rc == 0, f"worker exited {rc}:\n{log_path.read_text(errors='replace')[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
