"""Confirm runs: once a study with `confirm: {top_k, seeds}` has spent its search budget, its `top_k` best
distinct configurations are trained again with `seeds` more training seeds each, as ordinary queued trials
(kind `confirm`, same claim, leases, resume and fault handling) that Optuna never sees: they are repeats, not new
points for the sampler, and they are never pruned.

Enqueued by the lifecycle's completion check (in its transaction, the study row locked), instead of completing
the study; the study completes when they have finished too. A configuration that already has confirm runs is
never given more, so re-running the check (or completing again after an `extend`) only enqueues the new top
configurations.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.core.body_limits import SEED_LIMIT
from service.store.ranking import best_per_config_sql
from service.store.study_sql import TIMED_OUT_SQL

# The best search trial of each distinct configuration, the `:k` best of those, less the configurations that
# already have confirm runs (in any state).
_TO_CONFIRM = text(f"""
    WITH per_config AS ({best_per_config_sql("t.kind = 'search'")}
    ), top AS (
        SELECT * FROM per_config ORDER BY rank_key, number LIMIT :k
    )
    SELECT top.params, top.number FROM top
    WHERE NOT EXISTS (SELECT 1 FROM trials c WHERE c.study_id = :sid AND c.kind = 'confirm' AND c.params = top.params)
    ORDER BY top.rank_key, top.number
""")


def confirm_seeds(study_seed: int, count: int) -> list[int]:
    """`count` training seeds, distinct from each other and from the study's own seed (the one the search
    trials trained with), derived from it: the same for every configuration, so configurations are compared on
    the same seeds, and the same in every re-run of the study."""
    seeds: list[int] = []
    i = 0
    while len(seeds) < count:
        digest = hashlib.sha256(f"stsweep-confirm/{study_seed}/{i}".encode()).digest()
        seed = int.from_bytes(digest[:8], "big") % SEED_LIMIT
        if seed != study_seed and seed not in seeds:
            seeds.append(seed)
        i += 1
    return seeds


def enqueue_confirm_runs(s: Session, study_id: str) -> int:
    """Enqueue the confirm runs the study is due, if its search budget is spent (nothing queued or running) and
    its timeout has not passed. Returns how many were enqueued. Call with the study row locked."""
    study = s.execute(text(f"""
        SELECT spec->'confirm' AS confirm, (spec->>'seed')::bigint AS seed, {TIMED_OUT_SQL} AS timed_out,
               (SELECT count(*) FROM trials WHERE study_id = :sid AND state IN ('queued', 'running')) AS open
        FROM studies WHERE id = :sid AND status IN ('queued', 'running')"""), {"sid": study_id}).first()
    if study is None or not study.confirm or study.timed_out or study.open:
        return 0
    configs = s.execute(_TO_CONFIRM, {"sid": study_id, "k": int(study.confirm["top_k"])}).all()
    if not configs:
        return 0
    seeds = confirm_seeds(int(study.seed), int(study.confirm["seeds"]))
    runs = [{"params": c.params, "confirm_of": c.number, "train_seed": seed, "ord": i}
            for i, (c, seed) in enumerate(((c, seed) for c in configs for seed in seeds), start=1)]
    s.execute(text("""
        INSERT INTO trials (study_id, number, kind, confirm_of, params, train_seed)
        SELECT :sid, (SELECT coalesce(max(number), -1) FROM trials WHERE study_id = :sid) + r.ord,
               'confirm', r.confirm_of, r.params, r.train_seed
        FROM jsonb_to_recordset(CAST(:runs AS jsonb)) AS r(params jsonb, confirm_of int, train_seed bigint, ord int)
    """), {"sid": study_id, "runs": json.dumps(runs)})
    return len(runs)
