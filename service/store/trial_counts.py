"""Per-study trial numbers read from `trial_counts` (kept by triggers on `trials`, migration 0008_counts): a few
rows per study, whatever its number of trials.

Every change to a trial inserts delta rows in its own transaction and a writer now and then folds a study's
rows into one per (state, kind), so a study's numbers are the sum of its rows in one snapshot. A running trial
adds its count and attempts there, but its examples, plan and checkpoint bytes only in its own row (they change
with every progress report): `running_extras` adds those from the running rows, which the summary reads anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.core.states import TRIAL_STATES

SUMS = ("trials", "attempts", "examples", "seen_of_planned", "planned", "checkpoint_bytes", "reaps", "given_back",
        "given_back_fault")


@dataclass
class StateSums:
    """One study's trials in one state (all kinds)."""

    trials: int = 0
    attempts: int = 0
    examples: int = 0  # examples seen (not counting running trials')
    seen_of_planned: int = 0  # ... by the trials with a plan
    planned: int = 0  # ... and what those planned
    checkpoint_bytes: int = 0  # (not counting running trials')
    reaps: int = 0
    given_back: int = 0
    given_back_fault: int = 0


@dataclass
class StudySums:
    by_state: dict[str, StateSums] = field(default_factory=lambda: {s: StateSums() for s in TRIAL_STATES})
    by_kind: dict[str, int] = field(default_factory=dict)  # kind -> trials

    def counts(self) -> dict[str, int]:
        return {state: sums.trials for state, sums in self.by_state.items()}

    @property
    def total(self) -> int:
        return sum(sums.trials for sums in self.by_state.values())


_SUM_COLUMNS = ", ".join(f"sum({c}) AS {c}" for c in SUMS)


def study_sums(s: Session, ids: list[str]) -> dict[str, StudySums]:
    """Every study of `ids` (those without trials too), summed over its count rows (index ix_trial_counts_study)."""
    out = {i: StudySums() for i in ids}
    if not ids:
        return out
    for r in s.execute(text(f"SELECT study_id, state, kind, {_SUM_COLUMNS} FROM trial_counts "
                            "WHERE study_id = ANY(:ids) GROUP BY study_id, state, kind"), {"ids": ids}):
        study = out[r.study_id]
        sums = study.by_state.setdefault(r.state, StateSums())
        for c in SUMS:
            setattr(sums, c, getattr(sums, c) + int(getattr(r, c)))
        study.by_kind[r.kind] = study.by_kind.get(r.kind, 0) + int(r.trials)
    return out


def trial_total(s: Session, study_id: str, state: str | None = None) -> int:
    """How many trials the study has (in `state`, when given)."""
    where = " AND state = :state" if state else ""
    return int(s.execute(text(f"SELECT coalesce(sum(trials), 0) FROM trial_counts WHERE study_id = :sid{where}"),
                         {"sid": study_id, "state": state}).scalar_one())


def by_state(s: Session) -> dict[str, int]:
    """Trials by state across every study."""
    out = dict.fromkeys(TRIAL_STATES, 0)
    for state, n in s.execute(text("SELECT state, sum(trials) FROM trial_counts GROUP BY state")).all():
        out[state] = out.get(state, 0) + int(n)
    return out


def by_study_state(s: Session, statuses: tuple[str, ...],
                   project: str | None = None) -> dict[tuple[str, str, str], int]:
    """(project, study id, state) -> trials, for the studies whose status is one of `statuses`, of `project`
    (None: every project); states with none left out."""
    only = " AND st.project = :project" if project is not None else ""
    return {(proj, sid, state): int(n) for proj, sid, state, n in s.execute(text(f"""
        SELECT st.project, c.study_id, c.state, sum(c.trials) FROM trial_counts c JOIN studies st ON st.id = c.study_id
        WHERE st.status = ANY(:statuses){only} GROUP BY st.project, c.study_id, c.state HAVING sum(c.trials) <> 0"""),
        {"statuses": list(statuses), "project": project}).all()}


def by_project_state(s: Session, project: str | None = None) -> dict[tuple[str, str], int]:
    """(project, state) -> trials, of `project` (None: every project); pairs with none left out."""
    only = "WHERE st.project = :project " if project is not None else ""
    return {(proj, state): int(n) for proj, state, n in s.execute(text(f"""
        SELECT st.project, c.state, sum(c.trials) FROM trial_counts c JOIN studies st ON st.id = c.study_id
        {only}GROUP BY st.project, c.state HAVING sum(c.trials) <> 0"""), {"project": project}).all()}


@dataclass(frozen=True)
class Totals:
    attempts: int
    reaps: int
    given_back: int
    given_back_fault: int


def totals(s: Session) -> Totals:
    """Attempts and the reaps and give-backs in the trials' histories, across every study."""
    r = s.execute(text("SELECT coalesce(sum(attempts), 0) AS attempts, coalesce(sum(reaps), 0) AS reaps, "
                       "coalesce(sum(given_back), 0) AS given_back, "
                       "coalesce(sum(given_back_fault), 0) AS given_back_fault FROM trial_counts")).one()
    return Totals(int(r.attempts), int(r.reaps), int(r.given_back), int(r.given_back_fault))
