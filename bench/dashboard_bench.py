"""Dashboard server time on a big study (issue 5), next to optuna-dashboard on the same database.

    .venv/bin/python bench/dashboard_bench.py [--trials 20000] [--n 20] [--n-baseline 3]

1. bench/fill.py makes a fresh database (dropped at the end) with one study of --trials trials (4 params,
   4 intermediate values each), in our tables and the same trials in Optuna's.
2. Our app (`create_app`) and optuna-dashboard (`optuna_dashboard.wsgi(storage)`) are both called in-process,
   so the times are server time (routing, queries, serialization), no network:
   - first render: the JSON calls the study page makes on load (summary, 4 charts, first trials page), the
     first time (cold: importance not cached yet) and then the median of --n repeats (warm), summed as if
     served one after another (the browser sends them at once; on 2 cores the sum is the honest bound);
   - live update: `GET /changes?cursor=` after a worker tick (each running trial reports a new point and its
     progress through service/queue, as workers do), median and max of --n ticks; and an idle tick;
   - optuna-dashboard: `GET /api/studies/{id}` (what its study page loads: every trial), cold then warm, and
     its live poll `GET /api/studies/{id}?after=<n-10>`.
Prints each time, the totals and the ratios baseline / ours. A measurement, not a test: exit status 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import wsgiref.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.fill import filled_study  # noqa: E402
from service.store import queue  # noqa: E402
from service.api.app import create_app  # noqa: E402

TARGET_FIRST_RENDER_S = 2.0
TARGET_LIVE_MS = 200.0


def timed(call: Callable[[], tuple[int, int]]) -> tuple[float, int]:
    """(seconds, response bytes); fails loudly on a non-200."""
    t = time.perf_counter()
    status, size = call()
    dt = time.perf_counter() - t
    if status != 200:
        raise RuntimeError(f"status {status}")
    return dt, size


def ours(client: TestClient, path: str) -> Callable[[], tuple[int, int]]:
    def call() -> tuple[int, int]:
        r = client.get(path)
        return r.status_code, len(r.content)
    return call


def wsgi_get(app: Any, path: str, query: str = "") -> Callable[[], tuple[int, int]]:
    def call() -> tuple[int, int]:
        environ: dict[str, Any] = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ.update(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")
        status: list[str] = []
        body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        return int(status[0].split()[0]), len(body)
    return call


def ms(s: float) -> str:
    return f"{s * 1000:8.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=20, help="repeats of our requests (warm)")
    ap.add_argument("--n-baseline", type=int, default=3, help="repeats of optuna-dashboard's (seconds each)")
    ap.add_argument("--browser", action="store_true",
                    help="also time the study page in headless Chromium (/usr/bin/chromium) until every chart is drawn")
    args = ap.parse_args(argv)

    with filled_study(args.trials) as f:
        sid = f.study_id
        page = [f"/v1/studies/{sid}", f"/v1/studies/{sid}/charts/history", f"/v1/studies/{sid}/charts/curves",
                f"/v1/studies/{sid}/charts/parallel", f"/v1/studies/{sid}/charts/importance",
                f"/v1/studies/{sid}/trials?offset=0&limit=50&sort=number&order=asc"]
        with TestClient(create_app(f.ctx, run_reaper=False)) as client:
            client.headers["Authorization"] = f"Bearer {f.token}"
            print(f"\n== ours: study page first render ({args.trials} trials), server time in-process")
            cold = {p: timed(ours(client, p)) for p in page}
            warm = {p: statistics.median(timed(ours(client, p))[0] for _ in range(args.n)) for p in page}
            for p in page:
                print(f"  {p.replace(sid, '{id}'):58s} cold {ms(cold[p][0])}  warm {ms(warm[p])}  "
                      f"{cold[p][1] / 1024:8.1f} KiB")
            first_cold = sum(t for t, _ in cold.values())
            first_warm = sum(warm.values())
            print(f"  {'TOTAL (sum, as if served one after another)':58s} cold {ms(first_cold)}  warm {ms(first_warm)}"
                  f"  {sum(s for _, s in cold.values()) / 1024:8.1f} KiB")

            print("\n== ours: live update (GET /changes?cursor=) after a worker tick")
            # the page starts from the cursor its chart responses carry
            live, sizes, cursor = [], [], int(client.get(f"/v1/studies/{sid}/charts/history").json()["cursor"])
            leases = _running_leases(f.ctx, sid)
            for i in range(args.n):
                _worker_tick(f.ctx, leases, step=2048 + 256 * i)
                dt, size = timed(ours(client, f"/v1/studies/{sid}/changes?cursor={cursor}"))
                body = client.get(f"/v1/studies/{sid}/changes?cursor={cursor}").json()
                assert len(body["trials"]) == len(leases) and body["study"] is not None
                cursor = body["cursor"]
                live.append(dt)
                sizes.append(size)
            idle = statistics.median(timed(ours(client, f"/v1/studies/{sid}/changes?cursor={cursor}"))[0]
                                     for _ in range(args.n))
            print(f"  {len(leases)} trials changed per tick: median {ms(statistics.median(live))}  "
                  f"max {ms(max(live))}  {statistics.median(sizes) / 1024:.1f} KiB")
            print(f"  nothing changed:                median {ms(idle)}")

        if args.browser:
            _browser_render(f)

        import optuna_dashboard

        from service.store import optuna_bridge

        print(f"\n== optuna-dashboard {optuna_dashboard.__version__}: same database, in-process WSGI")
        app = optuna_dashboard.wsgi(optuna_bridge.storage(f.database_url, "optuna"))
        path = f"/api/studies/{f.optuna_study_id}"
        base_cold, base_size = timed(wsgi_get(app, path))
        base_warm = statistics.median(timed(wsgi_get(app, path))[0] for _ in range(args.n_baseline))
        after = f"after={max(0, args.trials - 10)}"
        base_live = statistics.median(timed(wsgi_get(app, path, after))[0] for _ in range(args.n_baseline))
        print(f"  GET {path:32s} cold {ms(base_cold)}  warm {ms(base_warm)}  {base_size / 1024 / 1024:.1f} MiB")
        print(f"  GET {path}?{after}   warm {ms(base_live)}  (its live poll)")

        print("\n== summary (server time)")
        print(f"  first render  ours cold {ms(first_cold)} / warm {ms(first_warm)}   "
              f"optuna-dashboard cold {ms(base_cold)} / warm {ms(base_warm)}   "
              f"ratio cold {base_cold / first_cold:6.1f}x  warm {base_warm / first_warm:6.1f}x   "
              f"target < {TARGET_FIRST_RENDER_S:.0f} s: {'met' if first_cold < TARGET_FIRST_RENDER_S else 'MISSED'}")
        live_med = statistics.median(live)
        print(f"  live update   ours median {ms(live_med)} / max {ms(max(live))}   "
              f"optuna-dashboard {ms(base_live)}   ratio {base_live / live_med:6.1f}x   "
              f"target < {TARGET_LIVE_MS:.0f} ms: {'met' if max(live) * 1000 < TARGET_LIVE_MS else 'MISSED'}")
    return 0


def _browser_render(f: Any) -> None:
    """Wall time in Chromium: navigation to the study page until all four charts and the table are drawn."""
    from playwright.sync_api import sync_playwright

    from tests.live import serve_in_thread
    from tests.test_dashboard_browser import ARGS, CHROMIUM

    ready = ("['chart-history','chart-curves','chart-parallel','chart-importance']"
             ".every(id => document.getElementById(id)?.dataset.ready === '1') "
             "&& document.querySelectorAll('#trials-table tbody tr[data-trial]').length > 0")
    with serve_in_thread(create_app(f.ctx, run_reaper=False)) as base, sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = b.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(base + "/")
        page.evaluate(f"sessionStorage.setItem('stsweep.token', '{f.token}')")
        print("\n== ours in Chromium: study page, navigation until every chart is drawn (wall time)")
        for attempt in ("first (plotly.js not cached)", "again", "again"):
            t = time.perf_counter()
            page.goto(f"{base}/?r={time.time()}#/studies/{f.study_id}")
            page.wait_for_function(ready, timeout=60_000)
            print(f"  {attempt:30s} {ms(time.perf_counter() - t)}")
        b.close()


def _running_leases(ctx: Any, study_id: str) -> list[queue.Lease]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, lease_token FROM trials WHERE study_id = :s AND state = 'running' "
                                 "ORDER BY number"), {"s": study_id}).all()
    return [queue.Lease(r.id, r.lease_token) for r in rows]


def _worker_tick(ctx: Any, leases: list[queue.Lease], step: int) -> None:
    """What the workers write between two polls: a new evaluation point and progress per running trial."""
    for k, lease in enumerate(leases):
        queue.report(ctx.sessions, lease, step, 0.8 + 0.001 * k)
        queue.progress(ctx.sessions, lease, step, step * 4, 60.0)


if __name__ == "__main__":
    sys.exit(main())
