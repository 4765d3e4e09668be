"""The reads cost O(page) or O(changed), not O(trials): every SELECT that the study list, study detail,
/changes, trial pages (first and deep, by cursor) and /metrics run against a study of 10,000 trials is
re-run under EXPLAIN ANALYZE, and the trial rows its plans touch (returned, filtered out or rechecked, over all
loops) are summed. A read that aggregated or scanned the study's trials would touch thousands."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text

from service.context import Context
from service.store import dashboard_reads, metrics_reads, studies, trial_pages
from service.store.db import session_scope
from tests.test_trial_counts import _study

N_TRIALS = 10_000
PAGE = 50


@contextmanager
def _statements(ctx: Context) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT run through the context's engine meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "(SELECT")):
            seen.append((statement, parameters))

    engine = ctx.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _trial_rows(plan: dict[str, Any]) -> int:
    loops = plan.get("Actual Loops", 1)
    here = 0
    if plan.get("Relation Name") == "trials":
        here = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
                + plan.get("Rows Removed by Index Recheck", 0)) * loops
    return here + sum(_trial_rows(p) for p in plan.get("Plans", []))


def trial_rows_touched(ctx: Context, read: Callable[[], Any]) -> int:
    with _statements(ctx) as seen:
        read()
    assert seen
    total = 0
    engine = ctx.sessions.kw["bind"]
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            for statement, parameters in seen:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
                plan = cur.fetchone()[0]
                total += _trial_rows((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
        raw.rollback()
    return total


def test_reads_touch_a_page_of_trials_not_the_study(ctx: Context) -> None:
    sid = _study(ctx, N_TRIALS, 8, "big")
    small = [_study(ctx, 30, 2, f"s{i}") for i in range(3)]
    with session_scope(ctx.sessions) as s:  # a study well under way: finished, pruned, failed and running trials
        s.execute(text("""UPDATE trials SET state = CASE WHEN number % 5 = 0 THEN 'pruned' WHEN number % 7 = 0
                              THEN 'failed' ELSE 'complete' END, value = (number % 97) / 97.0,
                              rank_key = -((number % 97) / 97.0), attempts = 1, examples_seen = 1000,
                              planned_examples = 2000, started_at = now(), finished_at = now(),
                              history = '[{"event": "lease expired"}]'
                          WHERE study_id = :s AND number < 6000"""), {"s": sid})
        s.execute(text("""UPDATE trials SET state = 'running', attempts = 1, started_at = now(),
                              lease_expires_at = now() + interval '1 minute', examples_seen = 10
                          WHERE study_id = :s AND number BETWEEN 6000 AND 6005"""), {"s": sid})
        s.execute(text("ANALYZE trials"))
        s.execute(text("ANALYZE trial_counts"))
    summary = studies.get_study(ctx.sessions, sid)
    assert summary.counts["running"] == 6 and sum(summary.counts.values()) == N_TRIALS
    delta = {"cursor": 0, "more": True}
    while delta["more"]:  # the dashboard's first catch-up, then it is at the top
        delta = dashboard_reads.changes(ctx.sessions, sid, delta["cursor"])
    cursor = delta["cursor"]
    with session_scope(ctx.sessions) as s:  # a few changes since the dashboard's cursor
        s.execute(text("UPDATE trials SET examples_seen = examples_seen + 5 WHERE study_id = :s AND state = 'running'"),
                  {"s": sid})
    deep = trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, None)
    for _ in range(3):
        assert deep.next_cursor
        deep = trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, None, cursor=deep.next_cursor)
    deep_cursor = trial_pages.encode_cursor("number", "asc", None, 8_000, 8_000, 0.0)
    queued_cursor = trial_pages.encode_cursor("number", "desc", "queued", 9_000, 9_000, 0.0)
    state_cursor = trial_pages.encode_cursor("state", "asc", None, "pruned", 4_000, 0.0)

    reads: dict[str, Callable[[], Any]] = {
        "study detail": lambda: studies.get_study(ctx.sessions, sid),
        "study list": lambda: studies.list_studies(ctx.sessions, 0, 500),
        "changes": lambda: dashboard_reads.changes(ctx.sessions, sid, cursor),
        "first trial page": lambda: trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, None),
        "deep trial page": lambda: trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, None, cursor=deep_cursor),
        "deep queued page": lambda: trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, "queued", descending=True,
                                                            cursor=queued_cursor),
        "deep page by state": lambda: trial_pages.list_trials(ctx.sessions, sid, 0, PAGE, None, "state",
                                                              cursor=state_cursor),
        "metrics": lambda: metrics_reads.snapshot(ctx.sessions, 30, metrics_reads.Series(None)),  # every series
    }
    touched = {name: trial_rows_touched(ctx, read) for name, read in reads.items()}
    # A page (plus one to know there is more), the running trials, one best-trial probe per study, a few
    # changed rows: never the study's 10,000 (nor its 6,000 finished ones).
    bound = 2 * PAGE + 40
    assert all(n <= bound for n in touched.values()), touched
    # OFFSET is kept, and costs what it skips: the plan reads every row before the page.
    assert trial_rows_touched(ctx, lambda: trial_pages.list_trials(ctx.sessions, sid, 8_000, PAGE, None)) > 8_000
    assert small  # the list holds several studies
