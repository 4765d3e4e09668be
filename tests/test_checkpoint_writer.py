"""Resumable checkpoints off the training thread (workers/checkpoint_writer.py with the loop's hooks): real files,
a real LocalArtifactStore, the lease-guarded record on real PostgreSQL. A checkpoint is recorded only once its
upload completed; a failed upload is never recorded; one job at a time, the next skipped while one is in flight;
at the end of a trial the one in flight is completed and recorded, or abandoned and its object deleted."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from transformers import TrainerControl

from service.context import Context
from service.store import queue, retention
from service.store.db import session_scope
from tests.faultkit import create_study
from tests.studyspecs import contract_study
from workers.checkpoint_policy import CheckpointPolicy
from workers.checkpoint_writer import CheckpointWriter
from workers.faults import Faults
from workers.hooks import LoopHooks
from workers.signals import ShutdownSignals
from workers.trial_callback import TrialCallback, TrialProgress

PAYLOAD = 256 * 1024


@pytest.fixture
def hooks(ctx: Context) -> LoopHooks:
    return hooks_for(ctx)


def hooks_for(ctx: Context) -> LoopHooks:
    study_id = create_study(ctx, contract_study(name="writer", budget={"n_trials": 1, "max_concurrent_trials": 1}))
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    prefix = retention.attempt_prefix(study_id, claim.number, claim.lease.token)
    return LoopHooks(ctx, claim.lease, None, None, prefix, None, ShutdownSignals(30), Faults())  # type: ignore[arg-type]


def recorded(ctx: Context, hooks: LoopHooks) -> Any:
    with session_scope(ctx.sessions) as s:
        return s.execute(text("SELECT resume_key, resume_sha256, resume_examples FROM trials WHERE id = :t"),
                         {"t": hooks.lease.trial_id}).one()


def stored(ctx: Context, hooks: LoopHooks) -> list[str]:
    return ctx.artifacts.list_keys(hooks.key_prefix)


class Folder:
    """Writes a checkpoint folder (random bytes) on whatever thread calls it; can be held until released."""

    def __init__(self, size: int = PAYLOAD, hold: bool = False) -> None:
        self.size = size
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, folder: Path) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30)
        folder.mkdir(parents=True)
        (folder / "state.bin").write_bytes(hashlib.sha256(str(folder).encode()).digest() * (self.size // 32))


def test_written_uploaded_and_recorded_beside_the_caller(ctx: Context, hooks: LoopHooks, tmp_path: Path) -> None:
    writer = CheckpointWriter(hooks.save_checkpoint)
    write = Folder()
    writer.start(tmp_path / "checkpoint-4", 64, write)
    writer.wait()
    assert write.threads and write.threads[0] != threading.current_thread().name
    row = recorded(ctx, hooks)
    assert row.resume_key == f"{hooks.key_prefix}/resume-64.tar" and row.resume_examples == 64
    assert stored(ctx, hooks) == [row.resume_key]
    body = b"".join(ctx.artifacts.open_range(row.resume_key))
    assert hashlib.sha256(body).hexdigest() == row.resume_sha256 and len(body) > PAYLOAD  # verified, complete
    assert not (tmp_path / "checkpoint-4").exists(), "the local folder goes once uploaded"
    assert writer.pop_cpu_seconds() is not None and writer.pop_cpu_seconds() is None  # measured once

    writer.start(tmp_path / "checkpoint-8", 128, Folder())  # the next replaces it: the older object is deleted
    writer.wait()
    assert recorded(ctx, hooks).resume_key == f"{hooks.key_prefix}/resume-128.tar"
    assert stored(ctx, hooks) == [f"{hooks.key_prefix}/resume-128.tar"]


def test_one_in_flight_and_the_next_one_due_is_skipped(ctx: Context, hooks: LoopHooks, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    callback = TrialCallback(None, hooks, TrialProgress(), eval_every=64, examples_per_step=16,  # type: ignore[arg-type]
                             patience=None, threshold=0.0, checkpoints=CheckpointPolicy(60.0))
    held = Folder(hold=True)
    callback.writer.start(tmp_path / "checkpoint-4", 64, held)
    assert held.entered.wait(30) and callback.writer.busy
    with pytest.raises(RuntimeError, match="still being written"):
        callback.writer.start(tmp_path / "checkpoint-5", 80, Folder())
    control = TrainerControl()
    with caplog.at_level(logging.DEBUG, logger="workers.trial_callback"):
        callback._checkpoint_due(control, 80)
    assert not control.should_save and callback.skipped == 1, "skipped, not queued"
    assert "checkpoint at 80 examples skipped" in caplog.text
    held.release.set()
    callback.writer.wait()
    assert recorded(ctx, hooks).resume_examples == 64
    callback._checkpoint_due(control, 96)
    assert control.should_save, "taken once the writer is free"

    every_eval = TrialCallback(None, hooks, TrialProgress(), eval_every=64, examples_per_step=16,  # type: ignore[arg-type]
                               patience=None, threshold=0.0, checkpoints=CheckpointPolicy(0.0))
    held = Folder(hold=True)
    every_eval.writer.start(tmp_path / "checkpoint-6", 96, held)
    assert held.entered.wait(30)
    control = TrainerControl()
    every_eval._checkpoint_due(control, 128)
    assert control.should_save and every_eval.skipped == 0, "interval 0: every evaluation, waiting as before"
    held.release.set()
    every_eval.writer.wait()


@pytest.fixture
def full_store(ctx: Context, tmp_path: Path) -> Iterator[Path]:
    """The artifact store on a 1 MiB tmpfs: smaller than the checkpoint, so every upload fails (disk full)."""
    root = Path(ctx.artifacts.root)  # type: ignore[attr-defined]
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_a_failed_upload_is_never_recorded(ctx: Context, tmp_path: Path, full_store: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    ctx.settings = ctx.settings.model_copy(update={"fault_retry_seconds": 1.0})
    hooks = hooks_for(ctx)
    writer = CheckpointWriter(hooks.save_checkpoint)
    with caplog.at_level(logging.WARNING, logger="stsweep.worker"):
        writer.start(tmp_path / "checkpoint-4", 64, Folder(size=2 * 2**20))
        writer.wait()  # a store that keeps refusing is skipped after its retries, not raised
    assert "resumable checkpoint at 64 examples skipped (disk full" in caplog.text
    assert recorded(ctx, hooks).resume_key is None
    assert not [p for p in full_store.rglob("*") if p.is_file()], "nothing partial left in the store"
    assert not (tmp_path / "checkpoint-4").exists()


def test_an_error_writing_the_folder_reaches_the_training_thread_and_records_nothing(
        ctx: Context, hooks: LoopHooks, tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        folder.mkdir()
        raise OSError(28, "No space left on device", str(folder))

    writer = CheckpointWriter(hooks.save_checkpoint)
    writer.start(tmp_path / "checkpoint-4", 64, broken)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    assert recorded(ctx, hooks).resume_key is None and stored(ctx, hooks) == []
    writer.wait()  # raised once


def test_abandoned_before_its_upload_leaves_nothing(ctx: Context, hooks: LoopHooks, tmp_path: Path) -> None:
    writer = CheckpointWriter(hooks.save_checkpoint)
    held = Folder(hold=True)
    writer.start(tmp_path / "checkpoint-4", 64, held)
    assert held.entered.wait(30)
    writer.abandon(wait=False)  # the trial ended while the folder was being written
    held.release.set()
    writer.abandon()
    assert not writer.busy
    assert recorded(ctx, hooks).resume_key is None and stored(ctx, hooks) == []
    assert not (tmp_path / "checkpoint-4").exists()


def test_abandoned_after_its_upload_is_deleted_not_recorded(ctx: Context, hooks: LoopHooks, tmp_path: Path) -> None:
    writer = CheckpointWriter(hooks.save_checkpoint)
    writer.start(tmp_path / "checkpoint-4", 64, Folder())
    writer.wait()
    first = recorded(ctx, hooks).resume_key

    class AbandonDuringUpload:
        def __init__(self, store: Any) -> None:
            self.store, self.abandon = store, threading.Event()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

        def put_dir(self, key: str, folder: Path) -> Any:
            info = self.store.put_dir(key, folder)
            self.abandon.set()  # the trial ends while the upload completes
            return info

    store = AbandonDuringUpload(ctx.artifacts)
    hooks.ctx = SimpleNamespace(artifacts=store, settings=ctx.settings, sessions=ctx.sessions)  # type: ignore[assignment]
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "state.bin").write_bytes(b"x" * 1024)
    hooks.save_checkpoint(tmp_path / "checkpoint-8", 128, store.abandon)
    assert recorded(ctx, hooks).resume_key == first, "the older checkpoint stays recorded"
    assert stored(ctx, hooks) == [first], "the abandoned upload was deleted"


def test_on_sigterm_the_checkpoint_in_flight_is_completed_and_recorded(ctx: Context, hooks: LoopHooks,
                                                                       tmp_path: Path) -> None:
    writer = CheckpointWriter(hooks.save_checkpoint)
    held = Folder(hold=True)
    writer.start(tmp_path / "checkpoint-4", 64, held)
    assert held.entered.wait(30)
    hooks.signals.requested.set()  # the worker is stopping: what is in flight still completes
    held.release.set()
    writer.wait()
    row = recorded(ctx, hooks)
    assert row.resume_examples == 64 and stored(ctx, hooks) == [row.resume_key]


def test_a_lost_lease_deletes_the_upload(ctx: Context, hooks: LoopHooks, tmp_path: Path) -> None:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": hooks.lease.trial_id})
    queue.reap_expired(ctx.sessions)
    writer = CheckpointWriter(hooks.save_checkpoint)
    writer.start(tmp_path / "checkpoint-4", 64, Folder())
    writer.wait()
    assert hooks.lost and recorded(ctx, hooks).resume_key is None and stored(ctx, hooks) == []
