"""A study's reference scores, written by workers: the untrained baseline, and the test-split score of the
winner (a job claimed once, when the study completes)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store.db import session_scope
from service.store.ranking import best_trial_sql


def baseline_known(factory: sessionmaker[Session], study_id: str) -> bool:
    with session_scope(factory) as s:
        return bool(s.execute(text("SELECT baseline_value IS NOT NULL FROM studies WHERE id = :id"),
                              {"id": study_id}).scalar_one_or_none())


def record_baseline(factory: sessionmaker[Session], study_id: str, full_value: float, subset_value: float) -> None:
    """The first baseline recorded stays (two workers may compute it at once)."""
    with session_scope(factory) as s:
        s.execute(text("UPDATE studies SET baseline_value = :full, baseline_subset_value = :subset "
                       "WHERE id = :id AND baseline_value IS NULL"),
                  {"id": study_id, "full": full_value, "subset": subset_value})


@dataclass(frozen=True)
class Winner:
    number: int
    checkpoint_key: str
    checkpoint_sha256: str


def claim_test_split(factory: sessionmaker[Session], study_id: str, metric: str) -> Winner | None:
    """Take the study's test-split job (only one worker scores the winner, once): the winner to score, or None
    when the job was already taken or no complete trial has a checkpoint."""
    with session_scope(factory) as s:
        claimed = s.execute(text("UPDATE studies SET test_metric = :metric WHERE id = :sid AND test_metric IS NULL "
                                 "RETURNING id"), {"sid": study_id, "metric": metric}).first()
        if claimed is None:
            return None
        row = s.execute(text(best_trial_sql("t.number, t.checkpoint_key, t.checkpoint_sha256", with_checkpoint=True)),
                        {"sid": study_id}).first()
    return Winner(row.number, row.checkpoint_key, row.checkpoint_sha256) if row else None


def record_test_value(factory: sessionmaker[Session], study_id: str, value: float) -> None:
    with session_scope(factory) as s:
        s.execute(text("UPDATE studies SET test_value = :v WHERE id = :sid"), {"sid": study_id, "v": value})
