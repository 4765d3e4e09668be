"""One racing claimant for tests/test_queue_race.py: claims, holds briefly, finishes, until the queue is dry.

Run as `python -m tests.queue_racer DATABASE_URL OUT_FILE`; writes one JSON line per claim.
"""

from __future__ import annotations

import json
import random
import sys
import time

from sqlalchemy import text

from service.store import queue
from service.store.db import make_engine, make_sessionmaker, session_scope


def main(url: str, out_path: str) -> None:
    engine = make_engine(url, pool_size=1)
    sessions = make_sessionmaker(engine)
    rng = random.Random()
    dry = 0
    with open(out_path, "w") as out:
        while dry < 5:
            got = queue.claim(sessions, None, 60)
            if got is None:
                dry += 1
                time.sleep(0.05)
                continue
            dry = 0
            claim, study_id = got
            with session_scope(sessions) as s:
                running = s.execute(text("SELECT count(*) FROM trials WHERE study_id = :s AND state = 'running'"),
                                    {"s": study_id}).scalar_one()
            out.write(json.dumps({"trial_id": claim.lease.trial_id, "study_id": study_id, "number": claim.number,
                                  "attempt": claim.attempt, "running_seen": running}) + "\n")
            out.flush()
            time.sleep(rng.uniform(0.001, 0.01))
            queue.finish(sessions, claim.lease, queue.Finish(state="complete", value=rng.random()), 3)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
