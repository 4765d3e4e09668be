"""The test split, once: when a study completes, its winner (and only the winner) is scored on the test
split. The score is shown with the study and never used to select anything."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sqlalchemy import text

from service.context import Context
from service.db import session_scope
from service.ranking import best_trial_sql
from workers.prepared import PreparedStudy

log = logging.getLogger("stsweep.worker")


def evaluate_winner_on_test(ctx: Context, study_id: str, prepared: PreparedStudy, scratch: Path) -> float | None:
    if prepared.test_evaluator is None:
        return None
    with session_scope(ctx.sessions) as s:
        # Claim the job: only one worker evaluates, once.
        claimed = s.execute(text("UPDATE studies SET test_metric = :metric WHERE id = :sid AND test_metric IS NULL "
                                 "RETURNING id"), {"sid": study_id, "metric": prepared.metric}).first()
        winner = s.execute(text(best_trial_sql("t.number, t.checkpoint_key, t.checkpoint_sha256",
                                               with_checkpoint=True)), {"sid": study_id}).first() if claimed else None
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
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET test_value = :v WHERE id = :sid"), {"sid": study_id, "v": value})
    log.info("study %s: winner #%d scores %.4f on the test split", study_id, winner.number, value)
    return value
