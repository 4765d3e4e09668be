"""Resumable checkpoints written and uploaded on a thread of their own, at most one in flight.

The training thread hands over a checkpoint already copied into memory (workers/checkpoint_snapshot.py) with
`start(folder, examples_seen, write)`; the writer thread serialises it into `folder` (`write(folder)`), then calls
`TrialHooks.save_checkpoint(folder, examples_seen, abandon)` (pack, upload, verify, record the key under the
lease), then deletes the folder. The caller decides what happens while one is in flight (`busy`): skip the next
checkpoint, or `wait()` for it. A job's exception is kept and raised on the training thread at the next
`check()` / `wait()`.

Endings: `wait()` completes the job in flight (recorded, if the store and the lease allow); `abandon()` tells it
to stop at its next stage (before writing, before uploading, or, once uploaded, instead of recording: the object
is then deleted), and returns once it has: either way nothing is left running, and no recorded key points at a
missing or partial object. A process killed mid-write leaves at worst an unrecorded object under its attempt's
prefix, which the reconciler's orphan collection deletes once the attempt is no longer live.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Save = Callable[[Path, int, threading.Event], None]  # TrialHooks.save_checkpoint
Write = Callable[[Path], None]


class CheckpointWriter:
    def __init__(self, save: Save) -> None:
        self.save = save
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        self._error: BaseException | None = None
        self._cpu_seconds: float | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, folder: Path, examples_seen: int, write: Write) -> None:
        """Write `folder` with `write`, then save it, in the background. Only when not `busy`."""
        if self.busy:
            raise RuntimeError("a checkpoint is still being written")
        self.check()
        self._thread = None
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(folder, examples_seen, write, self._abandon),
                                        daemon=True, name=f"checkpoint-{examples_seen}")
        self._thread.start()

    def _run(self, folder: Path, examples_seen: int, write: Write, abandon: threading.Event) -> None:
        started = time.thread_time()
        try:
            if abandon.is_set():
                return
            write(folder)
            if abandon.is_set():
                log.debug("checkpoint at %d examples abandoned before its upload", examples_seen)
                return
            self.save(folder, examples_seen, abandon)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by check() / wait()
            self._error = exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self._cpu_seconds = time.thread_time() - started

    def pop_cpu_seconds(self) -> float | None:
        """CPU seconds the last finished job spent on the writer thread, once (None: none finished since)."""
        if self.busy:
            return None
        seconds, self._cpu_seconds = self._cpu_seconds, None
        return seconds

    def check(self) -> None:
        """Raise a finished job's exception, if any (cheap: called after every step)."""
        if self._error is not None and not self.busy:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        """Block until the job in flight, if any, is complete; raise its exception, if it had one."""
        self._join()
        self.check()

    def abandon(self, *, wait: bool = True) -> None:
        """Stop the job in flight at its next stage and (`wait`) return once it has; its error, if any, is
        logged."""
        self._abandon.set()
        if wait:
            self._join()
            self._log_error("it was being abandoned")

    def drain(self) -> None:
        """`wait()` on a path that is already ending (an exception, or a result handed back): a job's failure is
        logged, not raised over the reason the trial ends."""
        self._join()
        self._log_error("the trial was ending")

    def _join(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.join()

    def _log_error(self, when: str) -> None:
        try:
            self.check()
        except Exception as exc:  # noqa: BLE001 - logged; the trial's own ending wins
            log.warning("a resumable checkpoint failed while %s: %s: %s", when, type(exc).__name__, exc)


__all__ = ["CheckpointWriter"]
