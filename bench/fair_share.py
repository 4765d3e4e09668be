"""Issue 20, item 5: the shares of claims that projects get, against their configured `share`.

    PYTHONPATH=. .venv/bin/python bench/fair_share.py [--procs 8] [--seconds 12] [--trial-ms 5] [--out FILE]

For each scenario (one project; two projects 1:1 and 2:1; three projects 1:1:1 and 1:2:3) on a fresh database:
one study per project, created in the order listed (the biggest share last), each with more slots than the run
can claim, so every project has work all along. --procs forked processes claim from the one queue as workers do
(bench/scale_claims.py: `queue.claim`, a --trial-ms simulated trial, `queue.finish`) for --seconds. Reports the
fraction of claims each project got beside its configured share, the largest gap, claims/s and claim latency
(the fair-share charge is in the claim), claims that came back empty while work was queued and slots claimed
twice (both must be 0). A measurement, not a test: it exits 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench import scale_claims, scale_pg  # noqa: E402
from bench.fill import OPTUNA_SCHEMA, make_settings  # noqa: E402
from service.context import Context  # noqa: E402
from service.core.schemas import ProjectCreate  # noqa: E402
from service.core.spec import StudySpec  # noqa: E402
from service.store import migrate, projects, studies  # noqa: E402
from service.store.db import session_scope  # noqa: E402

SCENARIOS: list[dict[str, float]] = [
    {"solo": 1.0},
    {"a": 1.0, "b": 1.0},
    {"a": 2.0, "b": 1.0},
    {"a": 1.0, "b": 1.0, "c": 1.0},
    {"a": 1.0, "b": 2.0, "c": 3.0},
]
SLOTS = 20_000  # per project: more than a run claims


def _pct(xs: list[float], q: float) -> float | None:
    s = sorted(xs)
    return s[max(0, -(-len(s) * q // 100) - 1)] if s else None


def run_scenario(shares: dict[str, float], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with scale_pg.database(scale_pg.SHARED_ADMIN_URL, "stsweep_fair") as url:
        migrate.upgrade(url)
        ctx = Context(make_settings(url, workdir), url)
        try:
            for name, share in shares.items():
                projects.create_project(ctx.sessions, ProjectCreate(name=name, share=share))
                spec = StudySpec.model_validate(scale_claims.study_body(SLOTS, args.procs, f"fair-{name}"))
                study_id = studies.new_study_id()
                studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {}, project=name)
            ctx.engine.dispose()  # no connection of ours survives into the fork
            jobs = [scale_claims.ClaimJob(url, OPTUNA_SCHEMA, None, False, args.trial_ms, args.seconds,
                                          workdir / f"{'-'.join(shares)}-{i}.json") for i in range(args.procs)]
            claimers = scale_claims.Claimers(jobs)
            claimers.start()
            claimers.release()
            records = claimers.finish(args.seconds + 60)
            with session_scope(ctx.sessions) as s:
                per_project = dict(s.execute(text(
                    "SELECT st.project, count(*) FROM trials t JOIN studies st ON st.id = t.study_id "
                    "WHERE t.attempts > 0 GROUP BY st.project")).all())
                twice = int(s.execute(text("SELECT count(*) FROM trials WHERE attempts > 1")).scalar_one())
                dry = list(s.execute(text(
                    "SELECT study_id FROM trials WHERE state = 'queued' GROUP BY study_id")).scalars())
        finally:
            ctx.close()
    claimed = [tid for r in records for tid in r["claimed"]]
    total = sum(per_project.values())
    starts, ends = [r["start"] for r in records if "start" in r], [r["end"] for r in records if "end" in r]
    wall = max(ends) - min(starts) if starts and ends else float("nan")
    configured = {n: s / sum(shares.values()) for n, s in shares.items()}
    achieved = {n: per_project.get(n, 0) / total if total else 0.0 for n in shares}
    claim_ms = [x for r in records for x in r["claim_ms"]]
    return {
        "shares": shares, "configured": configured, "achieved": achieved, "claims": total,
        "max_gap": max(abs(achieved[n] - configured[n]) for n in shares),
        "claims_per_s": total / wall if wall == wall and wall > 0 else None,
        "claim_p50_ms": statistics.median(claim_ms) if claim_ms else None, "claim_p99_ms": _pct(claim_ms, 99),
        "empty_while_queued": sum(r["empty_while_queued"] for r in records),
        "duplicates": (len(claimed) - len(set(claimed))) + twice,
        "every_project_had_work": len(dry) == len(shares),
        "errors": sum(len(r["errors"]) for r in records),
        "error_samples": [e for r in records for e in r["errors"]][:2],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'shares':>8} {'configured':>22} {'achieved':>22} {'max gap':>8} {'claims':>7} {'claim/s':>8} "
             f"{'p50 ms':>7} {'p99 ms':>7} {'empty*':>6} {'dups':>5} {'errors':>6}"]
    for r in rows:
        def fmt(d: dict[str, float]) -> str:
            return " ".join(f"{v:.3f}" for v in d.values())
        shares = ":".join(f"{s:g}" for s in r["shares"].values())
        lines.append(f"{shares:>8} {fmt(r['configured']):>22} {fmt(r['achieved']):>22} {r['max_gap']:>8.3f} "
                     f"{r['claims']:>7} {r['claims_per_s'] or 0:>8.1f} {r['claim_p50_ms'] or 0:>7.1f} "
                     f"{r['claim_p99_ms'] or 0:>7.1f} {r['empty_while_queued']:>6} {r['duplicates']:>5} "
                     f"{r['errors']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=8, help="claiming processes (default 8)")
    ap.add_argument("--seconds", type=float, default=12.0, help="claiming time per scenario (default 12)")
    ap.add_argument("--trial-ms", type=float, default=5.0, help="simulated trial length (default 5)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here (JSON)")
    args = ap.parse_args(argv)
    t0 = time.time()
    load_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="stsweep_fair_"))
    rows = []
    try:
        for shares in SCENARIOS:
            print(f"{len(shares)} project(s), shares {shares}, {args.procs} processes, {args.seconds:g} s ...",
                  flush=True)
            rows.append(run_scenario(shares, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows))
    print(f"(*empty: claims that came back empty while work was queued; every project had work all along: "
          f"{all(r['every_project_had_work'] for r in rows)}; load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; {time.time() - t0:.0f} s)")
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1,
                                       default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
