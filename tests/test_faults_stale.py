"""A stale attempt racing the live one on the same trial's artifacts: worker A is frozen (SIGSTOP) in the middle of
writing a resumable checkpoint, its lease runs out, worker B takes the trial over and records checkpoints of its
own; then A wakes up (SIGCONT), completes its write and is refused. A deletes only what it wrote; B's checkpoint
survives and verifies, and so does B's final checkpoint."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from service.context import Context
from service.settings import Settings
from service.store import reconcile, retention
from tests.faultkit import create_study, one, study_status, tiny_study, trials_of, wait_for, write_pairs
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow

TRAIN = 160


def test_a_stale_attempt_never_touches_the_live_attempts_checkpoints(ctx: Context, settings: Settings,
                                                                     tmp_path: Path) -> None:
    write_pairs(settings.data_root, train=TRAIN)  # type: ignore[arg-type]
    study_id = create_study(ctx, tiny_study("stale", train=TRAIN, budget={"n_trials": 1, "max_concurrent_trials": 1}))
    root = Path(settings.artifact_root)  # type: ignore[arg-type]
    trial_dir = root / "studies" / study_id / "trials" / "0"
    opts = {"lease_seconds": 3, "heartbeat_seconds": 0.5, "checkpoint_every_seconds": 0, "reaper_seconds": 1}
    a = start_worker(settings, tmp_path / "a.log", **opts)
    b = None
    try:
        part = wait_for(lambda: next(trial_dir.glob("*/.tmp-*.part"), None), 300, "A writing its first checkpoint",
                        interval=0.02)
        os.kill(a.pid, signal.SIGSTOP)
        a_token = part.parent.name
        b = start_worker(settings, tmp_path / "b.log", **opts)
        live = wait_for(lambda: (r := one(ctx, "SELECT resume_key, resume_sha256, lease_token FROM trials")) and
                        r.resume_key and a_token not in r.resume_key and r, 300, "B's own checkpoint")
        assert live.lease_token.hex in live.resume_key
        os.kill(a.pid, signal.SIGCONT)
        wait_for(lambda: "lease lost" in (tmp_path / "a.log").read_text(), 120, "A to notice its lease is gone")
        wait_for(lambda: not list((trial_dir / a_token).glob("*")) if (trial_dir / a_token).exists() else True, 60,
                 "A to delete what it wrote")
        assert a.poll() is None, "the stale worker is alive and well"
        now = one(ctx, "SELECT resume_key, resume_sha256, state FROM trials")
        if now.state == "running":  # B's latest checkpoint survives A's wake-up and verifies
            ctx.artifacts.get_dir(now.resume_key, tmp_path / "resume", expected_sha256=now.resume_sha256)
        wait_for(lambda: study_status(ctx, study_id) == "completed", 600, "B to finish the trial")
    finally:
        for w in (a, b):
            if w is not None and w.poll() is None:
                os.kill(w.pid, signal.SIGCONT)
                w.send_signal(signal.SIGKILL)
                w.wait()
    (trial,) = trials_of(ctx, study_id)
    assert trial.state == "complete" and trial.attempts == 2
    assert a_token not in trial.checkpoint_key
    ctx.artifacts.get_dir(trial.checkpoint_key, tmp_path / "final", expected_sha256=trial.checkpoint_sha256)
    reconcile.reconcile(ctx)
    assert ctx.artifacts.list_keys(f"{retention.study_prefix(study_id)}trials") == [trial.checkpoint_key]
    a_log = (tmp_path / "a.log").read_text()
    assert "Traceback" not in a_log, a_log[-3000:]
