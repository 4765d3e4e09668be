"""`stsweep up`: the API and one worker per GPU (one CPU worker without a GPU) as child processes of one
command, on the configured database or the embedded one. A child that dies is restarted (with backoff; a crash
loop is reported). Ctrl-C stops them cleanly: workers checkpoint and give their running trials back to the
queue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.context import Context
from service.local.bootstrap import prepare_database
from service.local.supervisor import ChildSpec, Supervisor, lease_releaser
from service.settings import Settings
from service.store.tokens import create_token

log = logging.getLogger("stsweep")


@dataclass(frozen=True)
class Stack:
    url: str  # the API's base URL
    token: str
    database_url: str
    supervisor: Supervisor  # keeps the API and the workers running (restarts, crash loops)

    @property
    def processes(self) -> tuple[subprocess.Popen[bytes], ...]:
        return tuple(self.supervisor.processes)


def _child_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    # The workers join this stack's database (embedded or not): they are told its URL, so none of them ever
    # starts a database of its own.
    env["STSWEEP_DATABASE_URL"] = database_url
    env["STSWEEP_HOME"] = str(settings.home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def wait_until_healthy(url: str, supervisor: Supervisor, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.poll()
        down = [c.spec.name for c in supervisor.children if c.final_code is not None]
        if down:
            raise RuntimeError(f"the stsweep {down[0]} exited during start-up and cannot be restarted "
                               "(see its output above)")
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
    grace period, then SIGKILL). While it runs, a child that exits unexpectedly is restarted with backoff
    (`wait_for_signal`). With `log_dir`, their output goes to api.log and worker.log there."""
    database_url = prepare_database(settings)
    ctx = Context(settings, database_url)
    try:
        token = create_token(ctx.sessions, f"stsweep-up-{time.strftime('%Y%m%d-%H%M%S')}")
    finally:
        ctx.close()
    env = _child_env(settings, database_url)
    python = sys.executable
    specs = [ChildSpec("api", [python, "-m", "service.cli", "serve", "--host", host, "--port", str(port)], env,
                       log_dir / "api.log" if log_dir else None)]
    if workers:
        specs.append(ChildSpec("worker", [python, "-m", "workers", *worker_args], env,
                               log_dir / "worker.log" if log_dir else None))
    leases = Context(settings, database_url)  # the worker hook ends a dead worker's leases at once
    supervisor = Supervisor(specs, cap=settings.restart_backoff_max_seconds, on_exit=lease_releaser(leases.sessions))
    supervisor.start()
    stack = Stack(url=f"http://{host}:{port}", token=token, database_url=database_url, supervisor=supervisor)
    done = threading.Event()
    keeper = threading.Thread(target=_keep_alive, args=(supervisor, done), name="stsweep-supervisor", daemon=True)
    try:
        wait_until_healthy(stack.url, supervisor)
        keeper.start()
        yield stack
    finally:
        done.set()
        if keeper.is_alive():
            keeper.join()
        supervisor.stop(signal.SIGTERM, settings.shutdown_grace_seconds + 5)
        leases.close()


def _keep_alive(supervisor: Supervisor, done: threading.Event) -> None:
    while not done.wait(0.3):
        try:
            supervisor.poll()
        except Exception:  # noqa: BLE001 - the keeper must outlive one bad round (a failed restart)
            log.exception("supervisor round failed")


def wait_for_signal(stack: Stack) -> None:
    """Block until Ctrl-C / SIGTERM, keeping the children running meanwhile (restarts, crash-loop reports).
    Returns early only when no child can run any more (each exited with a configuration error)."""
    stop = {"now": False}

    def handler(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["now"]:
        if all(c.final_code is not None for c in stack.supervisor.children):
            log.error("every stsweep process exited and none can be restarted; shutting down")
            break
        time.sleep(0.3)
