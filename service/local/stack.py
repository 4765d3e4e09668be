"""`stsweep up`: the API and one worker per GPU (one CPU worker without a GPU) as child processes of one
command, on the configured database or the embedded one. Ctrl-C stops them cleanly: workers checkpoint and
give their running trials back to the queue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.store.tokens import create_token
from service.local.bootstrap import prepare_database
from service.context import Context
from service.settings import Settings

log = logging.getLogger("stsweep")


@dataclass(frozen=True)
class Stack:
    url: str  # the API's base URL
    token: str
    database_url: str
    processes: tuple[subprocess.Popen[bytes], ...]


def _child_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["STSWEEP_DATABASE_URL"] = database_url
    env["STSWEEP_HOME"] = str(settings.home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def wait_until_healthy(url: str, procs: tuple[subprocess.Popen[bytes], ...], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a stsweep process exited during start-up (see its output above)")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not become ready at {url} within {timeout:.0f} s")


@contextmanager
def running_stack(settings: Settings, host: str, port: int, *, workers: bool = True,
                  worker_args: tuple[str, ...] = (), log_dir: Path | None = None) -> Iterator[Stack]:
    """Migrate, mint a token, start the API and the workers; on exit stop them gracefully (SIGTERM, then the
    grace period, then SIGKILL). With `log_dir`, their output goes to api.log and worker.log there."""
    database_url = prepare_database(settings)
    ctx = Context(settings, database_url)
    try:
        token = create_token(ctx.sessions, f"stsweep-up-{time.strftime('%Y%m%d-%H%M%S')}")
    finally:
        ctx.close()
    env = _child_env(settings, database_url)
    python = sys.executable
    commands = [("api", [python, "-m", "service.cli", "serve", "--host", host, "--port", str(port)])]
    if workers:
        commands.append(("worker", [python, "-m", "workers", *worker_args]))
    procs = [_start(cmd, env, log_dir / f"{name}.log" if log_dir else None) for name, cmd in commands]
    stack = Stack(url=f"http://{host}:{port}", token=token, database_url=database_url, processes=tuple(procs))
    try:
        wait_until_healthy(stack.url, stack.processes)
        yield stack
    finally:
        stop_processes(stack.processes, settings.shutdown_grace_seconds)


def _start(cmd: list[str], env: dict[str, str], log_file: Path | None) -> subprocess.Popen[bytes]:
    """A child in its own session: a Ctrl-C in the terminal reaches only us, and we pass on one SIGTERM."""
    if log_file is None:
        return subprocess.Popen(cmd, env=env, start_new_session=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def stop_processes(procs: tuple[subprocess.Popen[bytes], ...], grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop in time: killing it", p.pid)
            p.kill()
            p.wait()


def wait_for_signal(stack: Stack) -> None:
    """Block until Ctrl-C / SIGTERM, or until a child dies."""
    stop = {"now": False}

    def handler(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["now"]:
        if any(p.poll() is not None for p in stack.processes):
            log.error("a stsweep process exited; shutting down")
            break
        time.sleep(0.3)
