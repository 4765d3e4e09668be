"""Publishing a complete trial's final checkpoint within its project's stored-bytes quota.

Before the upload the worker asks whether the project has room for the checkpoint's files (a lower bound of
the tar's size: `quotas.checkpoint_room`); the tar is then uploaded under the attempt's own key, and the finish
that records it checks the quota again, under the project's row lock, with the real size (`queue.finish`). A
checkpoint refused there (or whose lease was lost) is deleted from the store at once (a delete the store
refuses now is left to the reconciler, which removes objects no row names). A refusal is a PayloadTooLarge whose
message names the quota: the loop fails the trial with it as the failure reason and goes on with the next.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from service.artifacts.store import ArtifactInfo
from service.context import Context
from service.core.errors import LeaseLost, PayloadTooLarge
from service.store import queue, quotas
from workers.faults import Faults


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files under `folder`: what its tar holds at least."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def upload(ctx: Context, faults: Faults, lease: queue.Lease, key: str, folder: Path,
           stop: threading.Event | None = None) -> ArtifactInfo:
    """The project's room asked first (PayloadTooLarge: nothing uploaded), then `folder` stored as one tar at
    `key`. Raises GaveUp when the store stays down past the retries."""
    nbytes = folder_bytes(folder)
    faults.db.call("stored-bytes quota", quotas.checkpoint_room, ctx.sessions, lease.trial_id, nbytes, stop=stop)
    return faults.store.call("final checkpoint", ctx.artifacts.put_dir, key, folder,
                             deadline=time.monotonic() + ctx.settings.fault_retry_seconds)


def record(ctx: Context, faults: Faults, lease: queue.Lease, finish: queue.Finish,
           stop: threading.Event | None = None) -> str:
    """`queue.finish`, retried through database outages; the study's status afterwards. When the finish is
    refused (the byte quota, a lost lease) the checkpoint it carried is deleted before the error goes on."""
    try:
        return faults.db.call("finish", queue.finish, ctx.sessions, lease, finish,
                              ctx.settings.failure_streak_to_pause, stop=stop)
    except (LeaseLost, PayloadTooLarge):
        if finish.checkpoint_key:
            faults.store.once("delete", ctx.artifacts.delete, finish.checkpoint_key)  # recorded nowhere: ours alone
        raise
