"""The test split, once: when a study completes, its winner (and only the winner) is scored on the test
split. The score is shown with the study and never used to select anything."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sentence_transformers import SentenceTransformer

from service.context import Context
from service.store import results
from workers.prepared import PreparedStudy

log = logging.getLogger("stsweep.worker")


def evaluate_winner_on_test(ctx: Context, study_id: str, prepared: PreparedStudy, scratch: Path) -> float | None:
    if prepared.test_evaluator is None:
        return None
    winner = results.claim_test_split(ctx.sessions, study_id, prepared.metric)
    if winner is None:
        return None
    folder = scratch / f"test-{study_id}"
    try:
        ctx.artifacts.get_dir(winner.checkpoint_key, folder, expected_sha256=winner.checkpoint_sha256)
        model = SentenceTransformer(str(folder), device=prepared.device)
        result = prepared.evaluate_test(model)
        assert result is not None
        value, _metrics = result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results.record_test_value(ctx.sessions, study_id, value)
    log.info("study %s: winner #%d scores %.4f on the test split", study_id, winner.number, value)
    return value
