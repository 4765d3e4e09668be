"""Disk full during the final save: the artifact root is a small tmpfs (smaller than one checkpoint). The trained
trial is given back, not failed, with nothing partial or corrupt registered or left on disk, and no attempt used;
once space returns (the tmpfs is grown), the trial completes and its checkpoint verifies."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.context import Context
from tests.faultkit import create_study, settings_for, study_status, tiny_study, trials_of, wait_for, write_pairs
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "artifacts"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(root)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_disk_full_during_the_final_save(database_url: str, tmp_path: Path, small_disk: Path) -> None:
    settings = settings_for(database_url, tmp_path, artifact_root=str(small_disk), lease_seconds=20,
                            checkpoint_every_seconds=100_000, fault_retry_seconds=3)
    write_pairs(settings.data_root, train=96)  # type: ignore[arg-type]
    ctx = Context(settings, database_url)
    study_id = create_study(ctx, tiny_study("disk-full", train=96, budget={"n_trials": 1, "max_concurrent_trials": 1},
                                            max_attempts=1))
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, "--exit-when-idle", "5")
    try:
        wait_for(lambda: (t := trials_of(ctx, study_id)[0]).fault_count >= 1 and t.state != "running", 300,
                 "the trained trial to be given back")
        (trial,) = trials_of(ctx, study_id)
        assert trial.state == "queued" and trial.attempts == 0, "given back, no attempt used (max_attempts is 1)"
        assert trial.checkpoint_key is None and trial.resume_key is None, "nothing registered"
        assert [h["event"] for h in trial.history] == ["given back"]
        assert trial.history[0]["fault"].startswith("final checkpoint: disk full"), trial.history
        assert not [p for p in small_disk.rglob("*") if p.is_file()], "no partial file left on the full disk"
        subprocess.run(["mount", "-o", "remount,size=1g", str(small_disk)], check=True)
        assert worker.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    (trial,) = trials_of(ctx, study_id)
    assert trial.state == "complete" and trial.attempts == 1 and trial.fault_count >= 1
    assert study_status(ctx, study_id) == "completed"
    ctx.artifacts.get_dir(trial.checkpoint_key, tmp_path / "final", expected_sha256=trial.checkpoint_sha256)
    text = log.read_text()
    assert "artifact store unavailable (disk full" in text and "given back to the queue" in text, text[-3000:]
    assert "Traceback" not in text
    ctx.close()
