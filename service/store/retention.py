"""What checkpoints a study keeps: the final checkpoints of its top-k complete trials and of the best run of
every configuration with confirm runs (the winner's among them), no resumable checkpoint of a trial that ended,
and nothing once the study is deleted."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import text

from service.context import Context
from service.store.db import session_scope
from service.store.ranking import BEST_ORDER_SQL, RANKED_SQL
from service.store.study_sql import json_int
from service.store.winner import PROTECTED_RUNS_SQL

_HEX32 = re.compile(r"[0-9a-f]{32}")


def study_prefix(study_id: str) -> str:
    return f"studies/{study_id}/"


def attempt_prefix(study_id: str, number: int, lease_token: uuid.UUID) -> str:
    """Where one attempt (one lease) of a trial writes: every object it stores is under its own folder, so
    no other attempt's write or delete can touch it (`.../trials/3/<lease hex>/resume-512.tar`, `final.tar`)."""
    return f"{study_prefix(study_id)}trials/{number}/{lease_token.hex}"


def attempt_of(study_id: str, key: str) -> tuple[int, str] | None:
    """(trial number, lease hex) of an object written under `attempt_prefix`, else None."""
    parts = key.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}/" != study_prefix(study_id) or parts[2] != "trials":
        return None
    if not parts[3].isdigit() or not _HEX32.fullmatch(parts[4]):
        return None
    return int(parts[3]), parts[4]


# Never a cast error, whatever the study row holds.
_CONFIRM_TOP_K = json_int("spec->'confirm'->'top_k'", "0")


def apply(ctx: Context, study_id: str, keep_top_k: int) -> list[str]:
    """Drop the final checkpoints of complete trials outside the top k (with `confirm`, the top
    max(k, confirm.top_k), so the configurations to be confirmed keep theirs), never the best run of a
    configuration with confirm runs (the winner's is one of them). Returns the keys deleted.

    O(k + checkpoints kept), whatever the study's size: the k-th best is read from ix_trials_best, the trials
    that still hold a checkpoint from ix_trials_kept, the confirm runs from ix_trials_confirm."""
    with session_scope(ctx.sessions) as s:
        keys = list(s.execute(text(f"""
            WITH kept AS (
                SELECT greatest(:k, (SELECT {_CONFIRM_TOP_K} FROM studies WHERE id = :sid)) AS n
            ), cutoff AS (
                SELECT t.rank_key, t.number FROM trials t
                WHERE t.study_id = :sid AND {RANKED_SQL}
                ORDER BY {BEST_ORDER_SQL} OFFSET greatest((SELECT n FROM kept) - 1, 0) LIMIT 1
            ), protected AS ({PROTECTED_RUNS_SQL}
            ), dropped AS (
                SELECT t.id, t.checkpoint_key FROM trials t CROSS JOIN cutoff c
                WHERE t.study_id = :sid AND t.checkpoint_key IS NOT NULL AND {RANKED_SQL}
                  AND ((SELECT n FROM kept) = 0 OR (t.rank_key, t.number) > (c.rank_key, c.number))
                  AND t.id NOT IN (SELECT id FROM protected)
                FOR UPDATE OF t
            )
            UPDATE trials t SET checkpoint_key = NULL, checkpoint_sha256 = NULL, checkpoint_bytes = NULL
            FROM dropped WHERE t.id = dropped.id
            RETURNING dropped.checkpoint_key
        """), {"sid": study_id, "k": keep_top_k}).scalars())
    for key in keys:
        ctx.artifacts.delete(key)
    return keys


def drop_resume_checkpoint(ctx: Context, trial_id: int) -> None:
    """A trial that ended needs its resumable checkpoint no more."""
    with session_scope(ctx.sessions) as s:
        key = s.execute(text("""
            UPDATE trials t SET resume_key = NULL, resume_sha256 = NULL, resume_examples = NULL
            FROM (SELECT id, resume_key FROM trials WHERE id = :tid FOR UPDATE) old
            WHERE t.id = old.id AND old.resume_key IS NOT NULL AND t.state <> 'running'
            RETURNING old.resume_key
        """), {"tid": trial_id}).scalar_one_or_none()
    if key:
        ctx.artifacts.delete(key)


def delete_study_artifacts(ctx: Context, study_id: str) -> None:
    ctx.artifacts.delete_prefix(study_prefix(study_id))
