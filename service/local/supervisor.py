"""Child processes kept alive: `stsweep worker` (one child per GPU slot) and `stsweep up` (the API and the
workers) restart a child that exits unexpectedly, with backoff, and report a crash loop instead of spinning.

A child that ran for `stable_seconds` before it exited is restarted after `base` seconds; one that exits
sooner again and again waits twice as long each time, up to `cap` (with jitter). After `crash_loop_after` quick
exits in a row the supervisor says, once, that the child is crash-looping (and keeps retrying every `cap`
seconds, since a database or a GPU may come back); once it runs steadily again it says so. Exit code 2 is a
usage or configuration error that no restart fixes: that child stays down. A child may also be marked `done`
by a clean exit (status 0) when it is allowed to end by itself (`--max-trials`, `--exit-when-idle`).
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.store.db import SessionFactory

log = logging.getLogger("stsweep.supervisor")

USAGE_ERROR = 2


@dataclass
class ChildSpec:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_file: Path | None = None
    clean_exit_ends: bool = False  # status 0 means "done" (not restarted); else every exit is unexpected


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when a restart is due (the child is down until then)
    quick_exits: int = 0  # exits in a row within stable_seconds of starting
    restarts: int = 0
    crash_looping: bool = False
    final_code: int | None = None  # set once the child stays down for good
    exits: list[int] = field(default_factory=list)


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class Supervisor:
    def __init__(self, specs: list[ChildSpec], *, base: float = 1.0, cap: float = 60.0,
                 stable_seconds: float = 60.0, crash_loop_after: int = 5,
                 start: Callable[[ChildSpec], subprocess.Popen[bytes]] | None = None,
                 on_exit: Callable[[Child, int], None] | None = None) -> None:
        self.children = [Child(s) for s in specs]
        self.on_exit = on_exit  # told of every exit (pid still in child.proc), before any restart
        self.base = base
        self.cap = cap
        self.stable_seconds = stable_seconds
        self.crash_loop_after = crash_loop_after
        self._start = start or _popen
        self.stopping = False
        self.rng = random.Random()

    def start(self) -> None:
        for child in self.children:
            self._launch(child)

    def _launch(self, child: Child) -> None:
        child.proc = self._start(child.spec)
        child.started_at = time.monotonic()
        child.restart_at = None

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self.children if c.proc is not None]

    def alive(self) -> bool:
        """Whether any child is running or due to be restarted."""
        return any(c.final_code is None for c in self.children)

    def poll(self) -> None:
        """Notice exits and restart what is due. Call it in a loop (every fraction of a second)."""
        now = time.monotonic()
        for child in self.children:
            if child.final_code is not None:
                continue
            if child.restart_at is not None:
                if self.stopping:
                    child.final_code = 0  # down when we were told to stop: stopped, not failed
                elif now >= child.restart_at:
                    child.restarts += 1
                    log.info("%s: restarting (restart %d)", child.spec.name, child.restarts)
                    self._launch(child)
                continue
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                if child.crash_looping and now - child.started_at >= self.stable_seconds:
                    child.crash_looping = False
                    child.quick_exits = 0
                    log.warning("%s: running steadily again after its crash loop", child.spec.name)
                continue
            self._exited(child, code, now)

    def _exited(self, child: Child, code: int, now: float) -> None:
        child.exits.append(code)
        if self.on_exit is not None:
            try:
                self.on_exit(child, code)
            except Exception:  # noqa: BLE001 - a failing hook never stops supervision
                log.exception("%s: exit hook failed", child.spec.name)
        ran = now - child.started_at
        if self.stopping or (code == 0 and child.spec.clean_exit_ends):
            child.final_code = code
            return
        if code == USAGE_ERROR:
            child.final_code = code
            log.error("%s exited with a usage or configuration error (exit code 2): not restarting it",
                      child.spec.name)
            return
        child.quick_exits = child.quick_exits + 1 if ran < self.stable_seconds else 1
        delay = min(self.cap, self.base * 2 ** (child.quick_exits - 1))
        delay = delay / 2 + self.rng.uniform(0, delay / 2)
        child.restart_at = now + delay
        if child.quick_exits >= self.crash_loop_after:
            if not child.crash_looping:
                child.crash_looping = True
                log.error("%s is crash-looping: it exited %d times in a row within %.0f s of starting (last: %s); "
                          "retrying every %.0f s or so", child.spec.name, child.quick_exits, self.stable_seconds,
                          describe(code), self.cap)
            return
        log.warning("%s exited unexpectedly (%s after %.0f s); restarting in %.1f s", child.spec.name,
                    describe(code), ran, delay)

    def signal_all(self, signum: int) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, grace: float = 60.0) -> None:
        """Forward `signum` to the running children (no restarts from now on), wait up to `grace` seconds,
        then SIGKILL what is left."""
        self.stopping = True
        self.signal_all(signum)
        deadline = time.monotonic() + grace
        for child in self.children:
            proc = child.proc
            if proc is None or child.final_code is not None:
                continue
            if child.restart_at is not None:
                child.final_code = 0  # down when we were told to stop: stopped, not failed
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in time: killing it", child.spec.name, proc.pid)
                proc.kill()
                proc.wait()
            if child.final_code is None:
                child.final_code = proc.returncode

    def exit_code(self) -> int:
        """0 when every child ended cleanly, else the first non-zero code (2 wins: it is the user's to fix)."""
        codes = [c.final_code for c in self.children if c.final_code]
        if USAGE_ERROR in codes:
            return USAGE_ERROR
        return next((abs(c) for c in codes if c), 0)


def _popen(spec: ChildSpec) -> subprocess.Popen[bytes]:
    """A child in its own session: a Ctrl-C in the terminal reaches only the supervisor, which passes on one
    SIGTERM."""
    if spec.log_file is None:
        return subprocess.Popen(spec.cmd, env=spec.env, start_new_session=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_file.open("ab") as out:
        return subprocess.Popen(spec.cmd, env=spec.env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)


def lease_releaser(sessions: SessionFactory) -> Callable[[Child, int], None]:
    """An `on_exit` hook for worker children: a child that died unasked holds leases no heartbeat renews any
    more; they end at once, so its trials resume elsewhere now instead of a lease later (if the database is down
    meanwhile, the leases simply run out)."""
    from service.store import queue
    from service.store.db import transient_reason
    from service.store.retry import Outage, Retry

    retry = Retry(Outage("database", log), transient_reason)
    host = socket.gethostname()

    def release(child: Child, code: int) -> None:
        if code == 0 or child.proc is None:
            return
        _, expired = retry.once("release a dead worker's trials", queue.expire_leases_of, sessions, host,
                                child.proc.pid)
        if expired:
            log.info("%s (pid %d) died holding %d trial(s): their leases end now", child.spec.name,
                     child.proc.pid, expired)

    return release
