"""Fair share between projects: which project's study a claim takes next (start-time fair queueing).

Each project has a virtual time, `projects.vtime`: every claim of one of its trials adds `1 / share` to it. A
claim takes a study of the project with the lowest virtual time (then, within it, the oldest study, as before
projects): over time each project gets claims in proportion to its `share`, whatever the number of its queued
trials or when its studies were created. Two projects with share 1 alternate A, B, A, B; shares 2 and 1 give
A, A, B, A, A, B.

A project is *live* while one of its studies could be claimed (an active study with a queued slot and a free
permit: `CLAIMABLE_SQL`). The virtual time of the live projects is `floor`, the lowest of theirs. A project that is
not live is lifted to `floor` by every charge: so a project that comes back after an idle spell (or whose study
was paused, or that is new) starts level with the others; it never finds a store of "saved up" claims to burst
through, and it cannot starve the projects that kept working. A live project is never lifted, so a claim that
raced others (claims of one snapshot all see the same lowest project) is charged in full and evened out by the
claims that follow: the long-run shares are exact, and what concurrency can bend is bounded by the number of
claims in flight at once.

What it costs (`charge`, the last statement of the claim's transaction): the claimed project's row is locked from
that statement to the commit, so concurrent claims of one project wait for each other only there, one commit each
(about a millisecond on local disk): with many workers and two or more live projects, one project's claims pass
at most one per commit latency, and claims of different projects never wait on each other (the lifts skip rows
another claim holds). While the claimed project is the only live one nothing is charged and no row is written:
a deployment with one project claims exactly as it did before fair share.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.store.lifecycle import ACTIVE_STUDY
from service.store.study_sql import TIMED_OUT_SQL

# Whether a claim could take a slot of this `studies` row: active, its timeout not passed, a queued slot and a
# free permit. One snapshot, locking nothing (queue.py takes the slot and the permit, SKIP LOCKED).
CLAIMABLE_SQL = f"""(studies.status IN {ACTIVE_STUDY} AND NOT {TIMED_OUT_SQL}
      AND EXISTS (SELECT 1 FROM trials t WHERE t.study_id = studies.id AND t.state = 'queued')
      AND EXISTS (SELECT 1 FROM claim_permits cp WHERE cp.study_id = studies.id AND cp.trial_id IS NULL
                  AND cp.slot < studies.max_concurrent_trials))"""

# The claim order's first key for a `studies` row: its project's virtual time (a primary-key probe).
PROJECT_VTIME_SQL = "(SELECT pr.vtime FROM projects pr WHERE pr.name = studies.project)"

# The virtual time a new project starts at: level with the live projects (or, with none live, with the furthest
# project), so that it neither jumps ahead of the projects working now nor waits behind them.
INITIAL_VTIME_SQL = f"""(SELECT coalesce(
    (SELECT min(pr.vtime) FROM projects pr WHERE pr.name IN (SELECT studies.project FROM studies
                                                             WHERE {CLAIMABLE_SQL})),
    (SELECT max(pr.vtime) FROM projects pr), 0))"""

# One statement, after the claim (the claimed project may have just run out of queued slots: it counts as live
# for `floor` all the same). `lifted` takes the rows it lifts SKIP LOCKED: a row another claim is charging or
# lifting is left to it. The charge itself waits for the project's row (its claims all count).
_CHARGE = text(f"""
    WITH live AS (
        SELECT DISTINCT studies.project FROM studies WHERE {CLAIMABLE_SQL}
    ), floor AS (
        SELECT min(vtime) AS v FROM projects WHERE name = :project OR name IN (SELECT project FROM live)
    ), idle AS (
        SELECT projects.name FROM projects, floor
        WHERE projects.name <> :project AND projects.name NOT IN (SELECT project FROM live)
          AND projects.vtime < floor.v
        FOR UPDATE OF projects SKIP LOCKED
    ), lifted AS (
        UPDATE projects SET vtime = floor.v FROM floor, idle
        WHERE projects.name = idle.name AND projects.vtime < floor.v
        RETURNING projects.name
    )
    UPDATE projects SET vtime = greatest(projects.vtime, floor.v) + 1.0 / projects.share
    FROM floor
    WHERE projects.name = :project AND EXISTS (SELECT 1 FROM live WHERE live.project <> :project)
""")


def charge(s: Session, project: str) -> None:
    """Count one claim of `project`, in the claim's transaction: its virtual time goes up by `1 / share` (not
    while it is the only live project), and the projects that are not live are lifted to `floor`."""
    s.execute(_CHARGE, {"project": project})
