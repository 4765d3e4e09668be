"""Start-up without a database, or with settings that cannot work: `stsweep serve` comes up anyway (health 200,
everything else 503, one log line) and recovers by itself; a worker refuses to start a database of its own
unless told to, and refuses a heartbeat that is not shorter than the lease."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.faultkit import free_port, private_cluster, wait_for

STSWEEP = str(Path(sys.executable).with_name("stsweep"))


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update({"STSWEEP_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    env.update({f"STSWEEP_{k.upper()}": v for k, v in values.items()})
    return env


def test_a_worker_without_a_database_url_refuses_to_start_one(tmp_path: Path) -> None:
    done = subprocess.run([STSWEEP, "worker", "--gpus", "none"], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no STSWEEP_DATABASE_URL" in done.stderr and "--embedded-database" in done.stderr
    assert not (tmp_path / "home" / "pgdata").exists(), "no embedded database was started"


def test_a_heartbeat_not_shorter_than_the_lease_is_refused_at_start_up(tmp_path: Path) -> None:
    env = _env(tmp_path, database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
               lease_seconds="30", heartbeat_seconds="30")
    for command in (["worker", "--gpus", "none"], ["serve"]):
        done = subprocess.run([STSWEEP, *command], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stderr)
        assert "heartbeat_seconds (30) must be shorter than lease_seconds (30)" in done.stderr, done.stderr


def test_serve_starts_without_the_database_and_recovers_by_itself(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with private_cluster() as cluster:
        cluster.stop()
        with log_path.open("w") as out:
            serve = subprocess.Popen([STSWEEP, "serve", "--port", str(port)],
                                     env=_env(tmp_path, database_url=cluster.url), stdout=out,
                                     stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            def health() -> int | None:
                try:
                    return httpx.get(f"{url}/healthz", timeout=2).status_code
                except httpx.HTTPError:
                    return None

            started = time.monotonic()
            assert wait_for(health, 60, "the API to answer /healthz") == 200
            assert time.monotonic() - started < 30, "no 30 s wait for the database before serving"
            for path in ("/readyz", "/v1/studies", "/metrics", "/"):
                r = httpx.get(f"{url}{path}", timeout=5)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "database_unavailable"
            assert serve.poll() is None
            cluster.start()
            wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 60, "the API to recover")
            assert httpx.get(f"{url}/v1/studies", timeout=5).status_code == 401, "serving normally: a token is needed"
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    output = log_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    waiting = [line for line in output.splitlines() if "database not reachable" in line]
    assert len(waiting) == 1 and "503 elsewhere" in waiting[0], output[-3000:]
    assert "database reachable after" in output
