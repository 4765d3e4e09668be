"""One claimant racing on sampling, for tests/test_sampling.py: claims slots, samples their parameters exactly as
the worker does (workers/sampling.py, the Optuna study rebuilt whenever the study changes, as the worker's warm
cache does), finishes each with a value computed from its parameters, and tells Optuna.

    python -m tests.sampleracer DATABASE_URL OUT_FILE [--max N] [--alternate STUDY_A,STUDY_B]

Writes one JSON line per trial. With --alternate, after each trial the study just used is paused and the other
resumed, so consecutive trials switch studies.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

from service.context import Context
from service.core.errors import Conflict
from service.settings import Settings
from service.store import lifecycle, optuna_bridge, queue, studies
from service.store.db import transient_reason
from service.store.retry import Outage, Retry
from workers.sampling import trial_params


def value_of(params: dict[str, object]) -> float:
    lr = float(params.get("learning_rate", 3e-5))  # type: ignore[arg-type]
    return -abs(math.log(lr) - math.log(4e-5)) + 0.01 * float(params.get("warmup_ratio", 0.0))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--max", type=int, default=None)
    ap.add_argument("--alternate", default=None)
    args = ap.parse_args()
    settings = Settings(database_url=args.url, _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, args.url)
    db = Retry(Outage("database", logging.getLogger("racer")), transient_reason)
    warm: tuple[str, object, object] | None = None
    done, dry = 0, 0
    with open(args.out, "w") as out:
        while (args.max is None or done < args.max) and dry < 20:
            got = queue.claim(ctx.sessions, None, 60)
            if got is None:
                dry += 1
                time.sleep(0.05)
                continue
            dry = 0
            claim, study_id = got
            if warm is None or warm[0] != study_id:
                spec, name, _ = studies.load_spec(ctx.sessions, study_id)
                warm = (study_id, spec, optuna_bridge.load_study(ctx.optuna_storage, name, spec))
            _, spec, study = warm
            trial, params = trial_params(ctx.sessions, study, spec, claim, db)  # type: ignore[arg-type]
            value = value_of(params)
            queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=value), 3)
            study.tell(trial, value)  # type: ignore[attr-defined]
            out.write(json.dumps({"study_id": study_id, "number": claim.number, "params": params}) + "\n")
            out.flush()
            done += 1
            if args.alternate:
                a, b = args.alternate.split(",")
                other = b if study_id == a else a
                for sid, action in ((study_id, "pause"), (other, "resume")):
                    try:
                        lifecycle.change_status(ctx.sessions, sid, action)  # type: ignore[arg-type]
                    except Conflict:
                        pass  # that study completed with this trial
    ctx.close()


if __name__ == "__main__":
    main()
