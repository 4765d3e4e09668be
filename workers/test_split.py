"""The test split, once: when a study completes, its winner (and only the winner) is scored on the test split
by whichever worker is free (a job with a lease: taken again if that worker dies). The score is shown with
the study and never used to select anything."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from service.context import Context
from service.store import results
from workers.faults import Faults
from workers.modelref import load_model
from workers.prepared import PreparedStudy

log = logging.getLogger("stsweep.worker")


def evaluate_winner_on_test(ctx: Context, job: results.ScoreJob, prepared: PreparedStudy, scratch: Path,
                            faults: Faults) -> float | None:
    """Score the job's winner; None when the study has no test evaluator. Transient faults propagate (the job
    is taken again once its lease runs out)."""
    if prepared.test_evaluator is None:
        return None
    winner = job.winner
    folder = scratch / f"test-{job.study_id}"
    try:
        faults.store.call("winner checkpoint", ctx.artifacts.get_dir, winner.checkpoint_key, folder,
                          expected_sha256=winner.checkpoint_sha256,
                          deadline=time.monotonic() + ctx.settings.fault_retry_seconds)
        model = load_model(str(folder), device=prepared.device)
        result = prepared.evaluate_test(model)
        assert result is not None
        value, _metrics = result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if faults.db.call("test score", results.record_test_value, ctx.sessions, job, prepared.metric, value):
        log.info("study %s: winner #%d scores %.4f on the test split", job.study_id, winner.number, value)
    else:
        log.warning("study %s: test-split job taken over by another worker; its score is kept", job.study_id)
    return value
