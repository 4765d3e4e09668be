"""A study's winner: the configuration it recommends, and the one run of it whose checkpoint is served as the
best, scored on the test split and kept by retention.

Runs are grouped by configuration (equal `params`: a search trial and its confirm runs). A configuration is
confirmed once one of its confirm runs completed; the winner is the confirmed configuration with the best mean
(in the objective's direction: the lowest mean `rank_key`), ties to the lower first trial number. Before any
configuration is confirmed (and in a study without `confirm`) the winner is the best trial on its own: one run,
no spread. The winner's checkpoint is its best run that has one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.core.schemas import BestTrial, StudyWinner
from service.store.ranking import BEST_ORDER_SQL, RANKED_SQL

# Every confirmed configuration of the studies `:ids`, with its runs' mean, spread and trial numbers.
_CONFIRMED_GROUPS = f"""
    WITH confirmed AS (
        SELECT DISTINCT c.study_id, c.params FROM trials c
        WHERE c.study_id = ANY(:ids) AND c.kind = 'confirm' AND c.state = 'complete' AND c.rank_key IS NOT NULL
    )
    SELECT t.study_id, t.params, avg(t.rank_key) AS mean_key, avg(t.value) AS mean, stddev_samp(t.value) AS std,
           count(*) AS runs, array_agg(t.number ORDER BY t.number) AS numbers, min(t.number) AS first
    FROM trials t JOIN confirmed c ON c.study_id = t.study_id AND c.params = t.params
    WHERE {RANKED_SQL}
    GROUP BY t.study_id, t.params
"""

_CONFIRMED_WINNERS = f"""
    SELECT DISTINCT ON (g.study_id) g.* FROM ({_CONFIRMED_GROUPS}) g
    ORDER BY g.study_id, g.mean_key, g.first
"""


def confirmed_winners(s: Session, ids: list[str]) -> dict[str, StudyWinner]:
    """The winners of the studies among `ids` that have a confirmed configuration."""
    if not ids:
        return {}
    return {r.study_id: StudyWinner(params=r.params, mean=float(r.mean),
                                    std=float(r.std) if r.std is not None else None, runs=int(r.runs),
                                    trial_numbers=[int(n) for n in r.numbers])
            for r in s.execute(text(_CONFIRMED_WINNERS), {"ids": ids})}


def single_run(best: BestTrial) -> StudyWinner:
    """The winner of a study without a confirmed configuration: its best trial, alone."""
    return StudyWinner(params=best.params, mean=best.value, std=None, runs=1, trial_numbers=[best.trial_number])


def winners(s: Session, ids: list[str], best: dict[str, BestTrial], with_confirm: set[str]) -> dict[str, StudyWinner]:
    """Every study's winner (`best`: each study's best trial; only the studies `with_confirm` can have confirmed
    configurations, the others are not even looked at)."""
    confirmed = confirmed_winners(s, [i for i in ids if i in with_confirm])
    return {i: confirmed.get(i) or single_run(b) for i, b in best.items()}


def winner_run_sql(columns: str) -> str:
    """SELECT `columns` of study `:sid`'s winning run with a checkpoint (aliases `t` and `st`): the best run of
    the winner's configuration; at most one row."""
    return f"""
        WITH w AS ({_CONFIRMED_GROUPS.replace('ANY(:ids)', ':sid')} ORDER BY mean_key, first LIMIT 1)
        SELECT {columns} FROM trials t JOIN studies st ON st.id = t.study_id
        WHERE t.study_id = :sid AND {RANKED_SQL} AND t.checkpoint_key IS NOT NULL
          AND (NOT EXISTS (SELECT 1 FROM w) OR t.params = (SELECT params FROM w))
        ORDER BY {BEST_ORDER_SQL} LIMIT 1
    """


def winner_run_number(s: Session, study_id: str) -> int | None:
    """The number of the run whose checkpoint is the study's best (None: no complete trial with one)."""
    number: Any = s.execute(text(winner_run_sql("t.number")), {"sid": study_id}).scalar_one_or_none()
    return int(number) if number is not None else None


# The runs retention never drops: the best run with a checkpoint of each configuration that has confirm runs
# (any one of them may turn out the winner; a study has at most confirm.top_k of them per completion).
PROTECTED_RUNS_SQL = f"""
    SELECT DISTINCT ON (t.params) t.id FROM trials t
    WHERE t.study_id = :sid AND {RANKED_SQL} AND t.checkpoint_key IS NOT NULL
      AND t.params IN (SELECT c.params FROM trials c WHERE c.study_id = :sid AND c.kind = 'confirm')
    ORDER BY t.params, {BEST_ORDER_SQL}
"""
