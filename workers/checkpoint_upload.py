"""Resumable checkpoint uploads on a thread of their own, so training goes on while a checkpoint is packed,
fsynced and sent to the artifact store.

The trainer writes the checkpoint folder itself, synchronously (it is the training state at that step); only
`TrialHooks.save_checkpoint(folder, ...)` (tar, upload, recording the key) runs here. At most one upload is in
flight: starting the next waits for the previous one, so uploads are never reordered and a folder is never
deleted under its own upload (the caller deletes older folders only after `wait()`). An upload's exception is
kept and raised on the training thread at the next `check()` / `wait()`, where it would have been raised before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Upload = Callable[[Path, int], None]


class BackgroundUpload:
    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, folder: Path, examples_seen: int) -> None:
        """Upload `folder` in the background, after the previous upload has finished (or raised)."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(folder, examples_seen), daemon=True,
                                        name=f"checkpoint-upload-{examples_seen}")
        self._thread.start()

    def _run(self, folder: Path, examples_seen: int) -> None:
        try:
            self.upload(folder, examples_seen)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by check() / wait()
            self._error = exc

    def check(self) -> None:
        """Raise a finished upload's exception, if any (cheap: called after every step)."""
        if self._error is not None and not self.in_flight:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        """Block until no upload is in flight; raise its exception, if it had one."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        self.check()

    def drain(self) -> None:
        """`wait()` on a path that is already ending (an exception, or a result handed back): an upload's
        failure is logged, not raised over the reason the trial ends."""
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - logged; the trial's own ending wins
            log.warning("a resumable checkpoint upload failed while the trial was ending: %s: %s",
                        type(exc).__name__, exc)


__all__ = ["BackgroundUpload"]
