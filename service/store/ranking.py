"""The one ranking of a study's complete trials, best first: `rank_key` (the value turned so that lower is
better, NULL unless finite), ties to the lower trial number. Served by the partial index ix_trials_best."""

from __future__ import annotations

# SQL for trials aliased `t`.
BEST_ORDER_SQL = "t.rank_key, t.number"
RANKED_SQL = "t.state = 'complete' AND t.rank_key IS NOT NULL"
# The rank key of `:value` for the study of the trial being updated (used in UPDATE trials ... SET).
RANK_KEY_SQL = """CASE WHEN CAST(:value AS float8) IS NULL OR CAST(:value AS float8) = 'NaN'::float8
         OR abs(CAST(:value AS float8)) = 'Infinity'::float8 THEN NULL
    WHEN (SELECT direction FROM studies WHERE studies.id = trials.study_id) = 'maximize' THEN -CAST(:value AS float8)
    ELSE CAST(:value AS float8) END"""


def best_per_config_sql(where: str = "") -> str:
    """SELECT params, number, rank_key of study `:sid`'s best complete trial of each distinct configuration
    (equal `params`; alias `t`), `where` further restricting the trials."""
    extra = f" AND {where}" if where else ""
    return (f"SELECT DISTINCT ON (t.params) t.params, t.number, t.rank_key FROM trials t "
            f"WHERE t.study_id = :sid AND {RANKED_SQL}{extra} ORDER BY t.params, {BEST_ORDER_SQL}")
