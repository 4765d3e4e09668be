"""Claims that scale with workers, on real PostgreSQL with real processes: many processes claim one study at
once without an empty claim while a slot is queued, the per-study cap holds exactly under the race, slots keep
their enqueue order and search index, and a claim (and a finish's settle) costs the same at 10^2 and 10^4
trials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from service.context import Context
from service.core.spec import MAX_TRIALS, StudySpec
from service.store import lifecycle, queue, studies
from service.store.db import session_scope
from service.store.lifecycle import _BUSY
from service.store.queue import _CLAIM_SKIPPING, _NEXT_STUDY
from tests.conftest import ROOT
from tests.studyspecs import contract_study

PROCESSES = 16


def _study(ctx: Context, n_trials: int, max_concurrent: int, name: str, **extra: Any) -> str:
    spec = StudySpec.model_validate(contract_study(
        name=name, budget={"n_trials": n_trials, "max_concurrent_trials": max_concurrent}, **extra))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", spec, None, {})
    return study_id


def test_many_processes_claim_one_study_with_no_empty_claim_and_the_cap_exact(ctx: Context, tmp_path: Path) -> None:
    # The older study is capped at 3: claims prefer it while it has room, and every other claim goes to the
    # younger one, whose cap no number of these processes reaches. Both race at once.
    capped = _study(ctx, 30, 3, "capped")
    wide = _study(ctx, 150, 64, "wide")
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue_racer", ctx.database_url,
                               str(tmp_path / f"{i}.jsonl"), str(tmp_path / f"{i}.empty.jsonl")], cwd=ROOT)
             for i in range(PROCESSES)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    claims = [json.loads(line) for i in range(PROCESSES)
              for line in (tmp_path / f"{i}.jsonl").read_text().splitlines()]
    empties = [json.loads(line) for i in range(PROCESSES)
               for line in (tmp_path / f"{i}.empty.jsonl").read_text().splitlines()]

    ids = [c["trial_id"] for c in claims]
    assert len(ids) == 180 and len(set(ids)) == 180, "every slot claimed exactly once"
    assert all(c["attempt"] == 1 for c in claims)
    # No claim came back empty while the uncapped study still had a queued slot (queued slots never come back
    # here: nothing is given back or reaped, so one seen right after an empty claim was queued during it).
    assert [e for e in empties if e["queued"].get(wide, 0) > 0] == []
    seen = [c["running_seen"] for c in claims if c["study_id"] == capped]
    assert max(seen) <= 3, "never more running than max_concurrent_trials"
    assert max(seen) == 3, "the capped study ran at its cap: claims did not serialise"
    writers = {i for i in range(PROCESSES) if (tmp_path / f"{i}.jsonl").read_text()}
    assert len(writers) > PROCESSES // 2, "the claims were spread over the processes"
    with session_scope(ctx.sessions) as s:
        states = dict(s.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all())
        statuses = set(s.execute(text("SELECT status FROM studies")).scalars())
        held = s.execute(text("SELECT count(*) FROM claim_permits WHERE trial_id IS NOT NULL")).scalar_one()
    assert states == {"complete": 180}
    assert statuses == {"completed"}
    assert held == 0, "every permit was given back with its trial's end"


def _search_index_by_count(ctx: Context, study_id: str) -> dict[int, int | None]:
    """Each slot's index among its study's search slots, counted (what the claim computed before it was stored)."""
    with session_scope(ctx.sessions) as s:
        rows = s.execute(text("""SELECT number, CASE WHEN kind = 'search' THEN
                                     (SELECT count(*) FROM trials p WHERE p.study_id = t.study_id
                                      AND p.kind = 'search' AND p.number < t.number) END
                                 FROM trials t WHERE study_id = :s"""), {"s": study_id}).all()
    return {int(n): (None if i is None else int(i)) for n, i in rows}


def _stored_search_index(ctx: Context, study_id: str) -> dict[int, int | None]:
    with session_scope(ctx.sessions) as s:
        rows = s.execute(text("SELECT number, search_index FROM trials WHERE study_id = :s"), {"s": study_id}).all()
    return {int(n): i for n, i in rows}


def test_claims_keep_enqueue_order_and_search_index_across_confirm_runs_and_extends(ctx: Context) -> None:
    study_id = _study(ctx, 2, 1, "interleaved", confirm={"top_k": 1, "seeds": 2})
    order: list[tuple[int, str, int | None]] = []

    def run(value: float) -> None:
        got = queue.claim(ctx.sessions, None, 30)
        assert got is not None
        claim = got[0]
        order.append((claim.number, claim.kind, claim.search_index))
        if claim.kind == "search":
            queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 1e-5 * (claim.number + 1)}, claim.number)
        queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=value), 3)

    run(0.5)
    run(0.9)  # the search budget is spent: two confirm runs of trial 1 are queued (numbers 2 and 3)
    assert lifecycle.extend(ctx.sessions, study_id, 2, MAX_TRIALS) == "running"  # search slots 2, 3 (numbers 4, 5)
    run(0.9)  # confirm run 2
    assert lifecycle.extend(ctx.sessions, study_id, 1, MAX_TRIALS) == "running"  # search slot 4 (number 6)
    for _ in range(4):
        run(0.1)
    assert order == [(0, "search", 0), (1, "search", 1), (2, "confirm", None), (3, "confirm", None),
                     (4, "search", 2), (5, "search", 3), (6, "search", 4)]
    assert _stored_search_index(ctx, study_id) == _search_index_by_count(ctx, study_id)
    assert queue.claim(ctx.sessions, None, 30) is None


def _buffers(ctx: Context, statement: Any, params: dict[str, Any]) -> tuple[int, list[str]]:
    """Shared buffers one execution of `statement` touched, and its plan's scans of `trials` (run, then rolled
    back: a claim measured here claims nothing for good)."""
    with ctx.engine.connect() as conn:
        tx = conn.begin()
        plan = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.text), params).scalar_one()
        tx.rollback()
    root = plan[0]["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "trials":
            scans.append(node["Node Type"])
        for child in node.get("Plans", []):
            walk(child)

    walk(root)
    return int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"]), scans


def _shaped(ctx: Context, n_trials: int, name: str) -> str:
    """A running study of `n_trials` slots, all but the last 20 ended, 5 of those running."""
    study_id = _study(ctx, n_trials, 8, name)
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET state = 'complete', value = 0.5 WHERE study_id = :s AND number < :n"),
                  {"s": study_id, "n": n_trials - 20})
    for _ in range(5):
        got = queue.claim(ctx.sessions, None, 60)
        assert got is not None and got[1] == study_id
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET status = 'paused' WHERE id = :s"), {"s": study_id})
    return study_id


def test_claim_and_settle_cost_does_not_grow_with_trials(ctx: Context) -> None:
    small, large = _shaped(ctx, 100, "small"), _shaped(ctx, 10_000, "large")
    with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE trials, claim_permits"))  # as autovacuum leaves a busy table
    cost: dict[str, dict[str, int]] = {}
    for study_id in (small, large):
        with session_scope(ctx.sessions) as s:  # only the one measured is active
            s.execute(text("UPDATE studies SET status = CASE WHEN id = :s THEN 'running' ELSE 'paused' END"),
                      {"s": study_id})
        params = {"sid": study_id, "max_concurrent": 8, "token": "00000000-0000-0000-0000-000000000001",
                  "worker_id": None, "lease_seconds": 60}
        measured = {"next study": _buffers(ctx, _NEXT_STUDY, {"tried": []}),
                    "claim": _buffers(ctx, _CLAIM_SKIPPING, params),
                    "settle check": _buffers(ctx, _BUSY, {"sid": study_id})}
        for what, (_, scans) in measured.items():
            assert "Seq Scan" not in scans, f"{what}: a sequential scan of trials ({scans})"
        cost[study_id] = {what: blocks for what, (blocks, _) in measured.items()}
    for what in cost[small]:
        # 100 times the trials: the same handful of index pages (a tree one level deeper at most), never
        # anything like 100 times the pages.
        assert cost[large][what] <= 2 * cost[small][what] + 4, (what, cost[small][what], cost[large][what])
