"""Issue 19: does the queue scale with workers, and do the reads scale with what changed?

    .venv/bin/python bench/scale.py [--quick] [--part a|b] [--workers 16,64,256] [--seconds 60] [--out FILE]

(a) N worker processes (16, 64, 256) claim one study of --slots slots, each in a loop of claim, a --trial-ms
    simulated trial and finish, through the project's own queue functions (bench/scale_claims.py), without and
    with Optuna's ask/tell (workers.sampling.trial_params + study.tell, as the worker does). Reports claims/s,
    claim / finish / ask / tell latency p50 and p99, claims that came back empty while a slot was queued (must
    be 0), duplicates (must be 0), connections per worker process. Goal: p99 claim < 50 ms at 256 processes.
    Each process holds one connection for our tables (and one for Optuna's); when the shared server has not
    that many free, a private cluster with a bigger max_connections is made and dropped (bench/scale_pg.py).
(b) 1,000 studies x 1,000 trials (10^6 trials, 100 running) and one study of 100,000 trials, filled through the
    API and set-based SQL (bench/scale_fill.py); the API runs as `stsweep serve` does; while --bg-claimers
    processes claim and finish trials in the background, the study list, study detail, first / deep (offset
    and keyset, if the API has a cursor) trial page, /changes and /metrics are timed (bench/scale_reads.py).
    Goals: every read p95 < 50 ms at both shapes; /metrics < 200 ms at 10^6 trials.

Prints a table per part with the goals beside the numbers and writes them all to --out (JSON). A measurement,
not a test: it exits 0 whether or not a goal is met (1 only when the bench itself failed to run).
--quick: small sizes (a few workers, seconds, small shapes), for tests/test_scale_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scale_claims, scale_fill, scale_pg, scale_reads  # noqa: E402
from bench.fill import OPTUNA_SCHEMA, make_settings  # noqa: E402
from service.context import Context  # noqa: E402
from service.store import lifecycle, migrate, optuna_bridge  # noqa: E402
from service.store.tokens import create_token  # noqa: E402

GOAL_CLAIM_P99_MS = 50.0  # at 256 processes
GOAL_READ_P95_MS = 50.0
GOAL_METRICS_MS = 200.0  # at 10^6 trials
POLL_SECONDS = 2.0  # what a real worker sleeps after an empty claim (STSWEEP_POLL_SECONDS default)


def log(msg: str) -> None:
    print(msg, flush=True)


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, -(-len(s) * q // 100) - 1)]


def _stats(xs: list[float]) -> dict[str, float | None]:
    return {"p50_ms": statistics.median(xs) if xs else None, "p99_ms": _pct(xs, 99), "n": len(xs)}


class _Sampler(threading.Thread):
    """The most client connections the database had at once during a run."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(daemon=True)
        self.ctx, self.peak, self.done = ctx, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                self.peak = max(self.peak, scale_claims.connections(self.ctx))
            except Exception:  # noqa: BLE001 - a missed sample
                pass


def _setup(url: str, workdir: Path) -> tuple[Context, str]:
    migrate.upgrade(url)
    ctx = Context(make_settings(url, workdir), url)
    ctx.optuna_storage  # noqa: B018 - Optuna's schema and tables
    return ctx, create_token(ctx.sessions, "scale")


def _create_study(ctx: Context, token: str, body: dict[str, Any]) -> str:
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    with TestClient(create_app(ctx, run_reaper=False)) as client:
        r = client.post("/v1/studies", json=body, headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/studies answered {r.status_code}: {r.text[:500]}")
    return str(r.json()["id"])


def _quiesce(ctx: Context) -> None:
    """No connection of the bench's own survives into a fork."""
    ctx.engine.dispose()
    ctx.optuna_storage.engine.dispose()


# ------------------------------------------------------------------ part (a)


def claim_run(ctx: Context, token: str, url: str, n: int, use_optuna: bool, args: argparse.Namespace,
              workdir: Path) -> dict[str, Any]:
    study_id = _create_study(ctx, token, scale_claims.study_body(args.slots, n, f"claims-{n}-{int(use_optuna)}"))
    jobs = [scale_claims.ClaimJob(url, OPTUNA_SCHEMA, study_id, use_optuna, args.trial_ms, args.seconds,
                                  workdir / f"a-{n}-{int(use_optuna)}-{i}.json") for i in range(n)]
    _quiesce(ctx)
    claimers = scale_claims.Claimers(jobs)
    setup_s = claimers.start()
    sampler = _Sampler(ctx)
    sampler.start()
    claimers.release()
    records = claimers.finish(args.seconds + 120)
    sampler.done.set()
    sampler.join()
    lifecycle.change_status(ctx.sessions, study_id, "stop")
    claims = sum(len(r["claimed"]) for r in records)
    starts, ends = [r["start"] for r in records if "start" in r], [r["end"] for r in records if "end" in r]
    wall = (max(ends) - min(starts)) if starts and ends else float("nan")
    errors = [e for r in records for e in r["errors"]]
    empty = sum(r["empty_while_queued"] for r in records)
    flat = {k: [x for r in records for x in r[k]] for k in ("claim_ms", "empty_ms", "finish_ms", "ask_ms", "tell_ms")}
    joins = [r["join_s"] for r in records if r.get("join_s") is not None]
    return {
        "workers": n, "optuna": use_optuna, "study_id": study_id, "processes_reported": len(records),
        "setup_s": round(setup_s, 2), "wall_s": round(wall, 2), "claims": claims,
        "claims_per_s": claims / wall if wall and wall == wall else None,
        "claim": _stats(flat["claim_ms"]), "claim_all_calls": _stats(flat["claim_ms"] + flat["empty_ms"]),
        "finish": _stats(flat["finish_ms"]), "ask": _stats(flat["ask_ms"]), "tell": _stats(flat["tell_ms"]),
        "first_join_s": {"median": statistics.median(joins), "max": max(joins)} if joins else None,
        "empty_claims_while_queued": empty, "implied_idle_worker_s": empty * POLL_SECONDS,
        "duplicates": scale_claims.duplicates(ctx, study_id, records, use_optuna, OPTUNA_SCHEMA),
        "peak_connections": sampler.peak,
        "connections_per_worker": round(max(0, sampler.peak - 1) / n, 2),
        "errors": len(errors), "error_samples": errors[:3],
    }


def part_a(args: argparse.Namespace) -> list[dict[str, Any]]:
    modes = {"both": [False, True], "without": [False], "with": [True]}[args.optuna]
    need = max(args.workers) * (2 if True in modes else 1) + 10
    out = []
    workdir = Path(tempfile.mkdtemp(prefix="stsweep_scale_a_"))
    try:
        with scale_pg.server_for(need, args.private, log) as admin, scale_pg.database(admin) as url:
            ctx, token = _setup(url, workdir)
            try:
                for use_optuna in modes:
                    for n in args.workers:
                        log(f"(a) {n} processes, {'with' if use_optuna else 'without'} Optuna, {args.seconds:g} s ...")
                        r = claim_run(ctx, token, url, n, use_optuna, args, workdir)
                        log(f"    {r['claims']} claims, {r['claims_per_s'] or 0:.1f}/s, claim p99 "
                            f"{r['claim']['p99_ms'] or 0:.1f} ms, empty while queued {r['empty_claims_while_queued']}, "
                            f"errors {r['errors']}")
                        out.append(r)
            finally:
                ctx.close()
                optuna_bridge.storage.cache_clear()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# ------------------------------------------------------------------ part (b)


def read_shape(name: str, n_studies: int, trials: int, running: int, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from bench.api_bench import _http_ok, server

    workdir = Path(tempfile.mkdtemp(prefix="stsweep_scale_b_"))
    try:
        with scale_pg.server_for(args.bg_claimers + 30, args.private, log) as admin, \
                scale_pg.database(admin) as url:
            ctx, token = _setup(url, workdir)
            try:
                log(f"(b) {name}: filling {n_studies} x {trials} ...")
                shape = scale_fill.fill(ctx, token, n_studies, trials, running, log)
                target = shape.running_ids[0] if shape.running_ids else shape.study_ids[0]
                _quiesce(ctx)
                bg = scale_claims.Claimers([
                    scale_claims.ClaimJob(url, OPTUNA_SCHEMA, None, False, args.trial_ms, 3600,
                                          workdir / f"b-{i}.json") for i in range(args.bg_claimers)])
                with server("ours", url, workdir, _http_ok("/healthz"), timeout=120) as port:
                    bg.start()
                    bg.release()
                    base = f"http://127.0.0.1:{port}"
                    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=300) as client:
                        reads = scale_reads.measure(client, base, target, trials, args.n)
                    records = bg.finish(30, stop_first=True)
                return {"shape": name, "studies": n_studies, "trials_per_study": trials, "running_studies": running,
                        "total_trials": n_studies * trials, "fill": shape.timings, "counts": scale_fill.counts(ctx),
                        "bg_claimers": args.bg_claimers,
                        "bg_claims": sum(len(r["claimed"]) for r in records),
                        "bg_claim": _stats([x for r in records for x in r["claim_ms"]]),
                        "bg_errors": sum(len(r["errors"]) for r in records), "reads": reads}
            finally:
                ctx.close()
                optuna_bridge.storage.cache_clear()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def part_b(args: argparse.Namespace) -> list[dict[str, Any]]:
    shapes = ([("10x100", 10, 100, 2), ("1x1000", 1, 1000, 1)] if args.quick else
              [("1000x1000", 1000, 1000, 100), ("1x100000", 1, 100_000, 1)])
    return [read_shape(*s, args) for s in shapes]


# ------------------------------------------------------------------ report


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def table_a(rows: list[dict[str, Any]]) -> str:
    head = (f"{'procs':>5} {'optuna':>6} {'claims':>7} {'claim/s':>8} {'claim p50':>9} {'p99':>7} "
            f"{'finish p50':>10} {'p99':>7} {'ask p99':>8} {'tell p99':>8} {'empty*':>7} {'dups*':>5} "
            f"{'conn/proc':>9} {'errors':>6}  goal")
    lines = ["(a) claims on one study  (* must be 0; goal: claim p99 < 50 ms at 256 processes)", head]
    for r in rows:
        dups = sum(r["duplicates"].values())
        goal = ""
        if r["workers"] >= 256:
            ok = (r["claim"]["p99_ms"] or 1e9) < GOAL_CLAIM_P99_MS
            goal = f"p99 {'met' if ok else 'NOT met'}"
        lines.append(
            f"{r['workers']:>5} {'yes' if r['optuna'] else 'no':>6} {r['claims']:>7} "
            f"{(r['claims_per_s'] or 0):>8.1f} {_ms(r['claim']['p50_ms']):>9} {_ms(r['claim']['p99_ms']):>7} "
            f"{_ms(r['finish']['p50_ms']):>10} {_ms(r['finish']['p99_ms']):>7} {_ms(r['ask']['p99_ms']):>8} "
            f"{_ms(r['tell']['p99_ms']):>8} {r['empty_claims_while_queued']:>7} {dups:>5} "
            f"{r['connections_per_worker']:>9} {r['errors']:>6}  {goal}")
    return "\n".join(lines)


def table_b(shapes: list[dict[str, Any]]) -> str:
    lines = ["(b) reads while workers claim  (goal: p95 < 50 ms each; /metrics < 200 ms at 10^6 trials)",
             f"{'shape':>10} {'read':>14} {'p50 ms':>8} {'p95 ms':>8} {'cold ms':>8} {'bytes':>9}  goal"]
    for s in shapes:
        for k, v in s["reads"].items():
            goal_ms = GOAL_METRICS_MS if k == "metrics" and s["total_trials"] >= 1_000_000 else GOAL_READ_P95_MS
            ok = v["p95_ms"] < goal_ms
            lines.append(f"{s['shape']:>10} {k:>14} {v['p50_ms']:>8.1f} {v['p95_ms']:>8.1f} "
                         f"{_ms(v['cold_ms']):>8} {v['bytes'] or 0:>9}  < {goal_ms:g}: {'met' if ok else 'NOT met'}")
        lines.append(f"{'':>10} background: {s['bg_claimers']} claimers, {s['bg_claims']} claims, claim p99 "
                     f"{_ms(s['bg_claim']['p99_ms'])} ms, errors {s['bg_errors']}")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (for the test)")
    ap.add_argument("--part", choices=["a", "b", "ab"], default="ab")
    ap.add_argument("--workers", default=None, help="worker process counts for (a), comma-separated")
    ap.add_argument("--optuna", choices=["both", "without", "with"], default="both")
    ap.add_argument("--seconds", type=float, default=None, help="length of each (a) run")
    ap.add_argument("--slots", type=int, default=None, help="slots of the (a) study")
    ap.add_argument("--trial-ms", type=float, default=5.0, help="the simulated trial")
    ap.add_argument("--bg-claimers", type=int, default=None, help="claimer processes during (b)")
    ap.add_argument("--n", type=int, default=None, help="timed requests per read in (b)")
    ap.add_argument("--private", action="store_true", help="always use a private cluster")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "scale_results.json")
    a = ap.parse_args(argv)
    a.workers = [int(x) for x in (a.workers or ("2" if a.quick else "16,64,256")).split(",")]
    a.seconds = a.seconds if a.seconds is not None else (2.0 if a.quick else 30.0)
    a.slots = a.slots if a.slots is not None else (2_000 if a.quick else 20_000)
    a.bg_claimers = a.bg_claimers if a.bg_claimers is not None else (1 if a.quick else 4)
    a.n = a.n if a.n is not None else (3 if a.quick else 30)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.time()
    result: dict[str, Any] = {
        "command": " ".join([os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "trial_ms": args.trial_ms, "seconds": args.seconds, "slots": args.slots,
        "goals": {"claim_p99_ms_at_256": GOAL_CLAIM_P99_MS, "read_p95_ms": GOAL_READ_P95_MS,
                  "metrics_ms_at_1e6": GOAL_METRICS_MS, "empty_claims_while_queued": 0, "duplicates": 0},
    }
    if "a" in args.part:
        result["part_a"] = part_a(args)
        log(table_a(result["part_a"]))
    if "b" in args.part:
        result["part_b"] = part_b(args)
        log(table_b(result["part_b"]))
    result["loadavg_end"] = os.getloadavg()
    result["wall_s"] = round(time.time() - t0, 1)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    log(f"written {args.out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
