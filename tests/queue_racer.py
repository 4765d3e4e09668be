"""One racing claimant for the queue race tests (tests/test_queue.py, tests/test_claim_scaling.py): claims, holds
briefly, finishes, until the queue is dry.

Run as `python -m tests.queue_racer DATABASE_URL OUT_FILE [EMPTY_FILE]`; writes one JSON line per claim to
OUT_FILE, and, with EMPTY_FILE, one line per claim that came back empty, with what the queue held right after it
(`queued`: queued slots per active study, `running`: running trials per study).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.store import queue
from service.store.db import make_engine, make_sessionmaker, session_scope


def _queue_state(sessions: sessionmaker[Session]) -> dict[str, dict[str, int]]:
    with session_scope(sessions) as s:
        rows = s.execute(text("""SELECT t.study_id, t.state, count(*) AS n FROM trials t
                                 JOIN studies st ON st.id = t.study_id
                                 WHERE st.status IN ('queued', 'running') AND t.state IN ('queued', 'running')
                                 GROUP BY t.study_id, t.state""")).all()
    state: dict[str, dict[str, int]] = {"queued": {}, "running": {}}
    for study_id, trial_state, n in rows:
        state[trial_state][study_id] = int(n)
    return state


def main(url: str, out_path: str, empty_path: str | None = None) -> None:
    engine = make_engine(url, pool_size=1)
    sessions = make_sessionmaker(engine)
    rng = random.Random()
    dry = 0
    empties: TextIO | None = open(empty_path, "w") if empty_path else None
    with open(out_path, "w") as out:
        while dry < 5:
            got = queue.claim(sessions, None, 60)
            if got is None:
                if empties is not None:
                    empties.write(json.dumps(_queue_state(sessions)) + "\n")
                    empties.flush()
                dry += 1
                time.sleep(0.05)
                continue
            dry = 0
            claim, study_id = got
            with session_scope(sessions) as s:
                running = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :s AND state = 'running'"),
                                    {"s": study_id}).scalar_one()
            out.write(json.dumps({"trial_id": claim.lease.trial_id, "study_id": study_id, "number": claim.number,
                                  "attempt": claim.attempt, "running_seen": running,
                                  "search_index": claim.search_index}) + "\n")
            out.flush()
            time.sleep(rng.uniform(0.001, 0.01))
            queue.finish(sessions, claim.lease, queue.Finish(state="complete", value=rng.random()), 3)
    if empties is not None:
        empties.close()
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
