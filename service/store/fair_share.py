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

What it costs (`charge`, at the end of the claim's transaction: after the slot is taken, before a study's first
claim marks its row started, so the project's row comes before the study's, as the quota checks take them): the
claimed project's row is locked from the charge to the commit (a lift, one more statement when a project is
behind, comes in between), so concurrent claims of one project wait for each other there, a statement or two
and a commit each (about a millisecond on local disk): with many workers and two or more live projects, one
project's claims pass one at a time through that last millisecond, and claims of different projects never wait on
each other (the lifts skip rows another claim holds). While the claimed project is the only live one, the claim
runs no statement of this module and locks and writes nothing here: a deployment with one project claims as it
did before fair share.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.store.study_sql import ACTIVE_STUDY, TIMED_OUT_SQL

# Whether a claim could take a slot of this `studies` row: active, its timeout not passed, a queued slot and a
# free permit. One snapshot, locking nothing (queue.py takes the slot and the permit, SKIP LOCKED).
CLAIMABLE_SQL = f"""(studies.status IN {ACTIVE_STUDY} AND NOT {TIMED_OUT_SQL}
      AND EXISTS (SELECT 1 FROM trials t WHERE t.study_id = studies.id AND t.state = 'queued')
      AND EXISTS (SELECT 1 FROM claim_permits cp WHERE cp.study_id = studies.id AND cp.trial_id IS NULL
                  AND cp.slot < studies.max_concurrent_trials))"""

# The claim order's first key for a `studies` row: its project's virtual time (a primary-key probe).
PROJECT_VTIME_SQL = "(SELECT pr.vtime FROM projects pr WHERE pr.name = studies.project)"



def contended_sql(alias: str) -> str:
    """Whether a study of another project than `alias`.project could be claimed too (else the claim charges
    nothing: `charge` is not called)."""
    return f"EXISTS (SELECT 1 FROM studies WHERE studies.project <> {alias}.project AND {CLAIMABLE_SQL})"


# The virtual time a new project starts at: level with the live projects (or, with none live, with the furthest
# project), so that it neither jumps ahead of the projects working now nor waits behind them.
INITIAL_VTIME_SQL = f"""(SELECT coalesce(
    (SELECT min(pr.vtime) FROM projects pr WHERE pr.name IN (SELECT studies.project FROM studies
                                                             WHERE {CLAIMABLE_SQL})),
    (SELECT max(pr.vtime) FROM projects pr), 0))"""

# After the claim (the claimed project may have just run out of queued slots: it counts as live for `floor` all the
# same). The charge waits for the project's row (its claims all count); it is the only wait, and the claim holds no
# other projects row then, so claims never deadlock on these rows.
_CHARGE = text(f"""
    WITH live AS (
        SELECT DISTINCT studies.project FROM studies WHERE {CLAIMABLE_SQL}
    ), floor AS (
        SELECT min(vtime) AS v FROM projects WHERE name = :project OR name IN (SELECT project FROM live)
    ), charged AS (
        UPDATE projects SET vtime = greatest(projects.vtime, floor.v) + 1.0 / projects.share
        FROM floor
        WHERE projects.name = :project AND EXISTS (SELECT 1 FROM live WHERE live.project <> :project)
    )
    SELECT floor.v AS floor, array(SELECT project FROM live) AS live,
           EXISTS (SELECT 1 FROM projects WHERE name <> :project AND name NOT IN (SELECT project FROM live)
                   AND vtime < floor.v) AS behind
    FROM floor
""")

# Then the projects not live that are behind `floor` (when there are) are lifted to it, SKIP LOCKED: a row another
# claim is charging or lifting is left to it, and this never waits.
_LIFT = text("""
    UPDATE projects SET vtime = :floor
    WHERE name IN (SELECT name FROM projects WHERE name <> :project AND name <> ALL(:live) AND vtime < :floor
                   FOR UPDATE SKIP LOCKED)
""")


def charge(s: Session, project: str) -> None:
    """Count one claim of `project`, in the claim's transaction, when another project was live as it chose
    (`contended_sql`): its virtual time goes up by `1 / share` (unless it is the only live project by now), and
    the projects that are not live are lifted to `floor`. While one project alone has work nothing moves, and
    the claim does not call this: the projects keep where they stand to each other."""
    row = s.execute(_CHARGE, {"project": project}).one()
    if row.behind:
        s.execute(_LIFT, {"project": project, "floor": row.floor, "live": list(row.live)})
