"""A SIGKILL loop: ten kills at random moments of the worker processes of `stsweep worker --trials-per-gpu 2`
(the per-GPU supervisor, on the CPU), checkpoints at every evaluation. The supervisor restarts every killed
child; every trial ends complete or pruned within max_attempts, every point is reported once, Optuna agrees,
and the best checkpoint verifies and loads; nothing of the dead attempts is left in the artifact store."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.context import Context
from service.settings import Settings
from service.store import checkpoints, reconcile, retention
from tests.conftest import ROOT
from tests.faultkit import assert_nothing_lost, create_study, rows, study_status, tiny_study, trials_of, wait_for, \
    write_pairs
from tests.workerproc import worker_env

pytestmark = pytest.mark.slow

EVERY = 32
TRAIN = 128
KILLS = 10
MAX_ATTEMPTS = 12


def _children(parent: int) -> list[int]:
    """The live children of `parent`: a child already killed but not yet reaped by the supervisor is a zombie,
    which `kill -9` still "kills" (exit status 0) without a second death to count."""
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found if not _zombie(int(p))]


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    return stat[stat.rindex(")") + 2] in "ZX"


def _training_pids(ctx: Context, checkpointed: bool) -> set[int]:
    """Workers training a trial (and, with `checkpointed`, whose attempt recorded a resumable checkpoint)."""
    own = "AND strpos(t.resume_key, replace(CAST(t.lease_token AS text), '-', '')) > 0" if checkpointed else ""
    return {r.pid for r in rows(ctx, f"""SELECT w.pid FROM trials t JOIN workers w ON w.id = t.worker_id
                                         WHERE t.state = 'running' AND t.examples_seen > 0 {own}""")}


def test_ten_sigkills_at_random_moments(ctx: Context, settings: Settings, tmp_path: Path) -> None:
    write_pairs(settings.data_root, train=TRAIN)  # type: ignore[arg-type]
    study_id = create_study(ctx, tiny_study(
        "kill-loop", train=TRAIN, budget={"n_trials": 4, "max_concurrent_trials": 2}, max_attempts=MAX_ATTEMPTS,
        pruner={"name": "median", "n_startup_trials": 2}, keep_top_k=1))
    env = worker_env(settings, lease_seconds=5, heartbeat_seconds=1, checkpoint_every_seconds=0,
                     reaper_seconds=1, restart_backoff_max_seconds=4)
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        sup = subprocess.Popen([sys.executable, "-m", "workers", "--gpus", "none", "--trials-per-gpu", "2"],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    rng = random.Random(7)
    killed: list[int] = []
    try:
        wait_for(lambda: rows(ctx, "SELECT 1 FROM trials WHERE state = 'running' AND examples_seen > 0"), 300,
                 "training to start")
        while len(killed) < KILLS and study_status(ctx, study_id) != "completed":
            # A random moment of a child's training: every other kill once its attempt has checkpointed (so
            # that one resumes), the others anywhere from its first step on.
            after_checkpoint = len(killed) % 2 == 0
            training = wait_for(lambda: [p for p in _children(sup.pid) if p in _training_pids(ctx, after_checkpoint)]
                                or study_status(ctx, study_id) == "completed", 300, "a child training")
            if training is True:
                break
            time.sleep(rng.uniform(0.0, 3.0) if after_checkpoint else rng.uniform(0.5, 8.0))
            alive = [p for p in training if p in _children(sup.pid) and p not in killed]
            if alive:
                victim = rng.choice(alive)
                if subprocess.run(["kill", "-9", str(victim)], capture_output=True).returncode == 0:
                    killed.append(victim)
        wait_for(lambda: study_status(ctx, study_id) == "completed", 900, "the study to complete")
        assert sup.poll() is None
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    output = log.read_text()
    assert len(killed) == KILLS, f"the study ended after {len(killed)} kills"
    assert output.count("resuming from checkpoint at") >= 3, "killed trials resumed from their checkpoints"
    assert output.count("exited unexpectedly (signal SIGKILL") + output.count("is crash-looping") >= KILLS - 1
    assert output.count("restarting (restart") >= KILLS - 1, output[-3000:]
    assert_nothing_lost(ctx, study_id, n_trials=4, every=EVERY, planned=TRAIN)
    found = trials_of(ctx, study_id)
    assert all(1 <= t.attempts <= MAX_ATTEMPTS for t in found), [(t.number, t.attempts) for t in found]
    assert sum(t.attempts for t in found) > len(found), "the kills did cost attempts"
    # The best checkpoint verifies and loads.
    best = checkpoints.best_checkpoint(ctx.sessions, study_id)
    folder = tmp_path / "best"
    ctx.artifacts.get_dir(best.key, folder, expected_sha256=best.sha256)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(folder), device="cpu").encode(["a test"]).shape == (1, 384)
    # Retention kept the best final checkpoint only; the dead attempts' uploads are collected.
    reconcile.reconcile(ctx)
    assert ctx.artifacts.list_keys(f"{retention.study_prefix(study_id)}trials") == [best.key]
    assert ctx.artifacts.list_partial(retention.study_prefix(study_id)) == [], "a write cut short by a kill is left"
