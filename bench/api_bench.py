"""API latency on a big study (issue 2): our API next to optuna-dashboard, same database, same run.

    .venv/bin/python bench/api_bench.py [--trials 20000] [--n 50] [--n-baseline 20] [--warmup 5]

1. bench/fill.py makes a fresh database (dropped at the end) with one study of --trials trials, created through
   `POST /v1/studies` and filled in bulk, the same trials in Optuna's tables.
2. Starts our API (uvicorn, `create_app`, as `stsweep serve` does) and optuna-dashboard
   (`optuna_dashboard.wsgi(storage)` under wsgiref) in two subprocesses on 127.0.0.1, free ports.
3. Times, with httpx: `GET /v1/studies/{id}`, `GET /v1/studies/{id}/trials?limit=100` (first page) and
   `...&offset=<trials-1000>` (a deep page), and optuna-dashboard's `GET /api/studies/{id}`. The first request
   to each is reported apart (cold); then a warm-up, then --n timed requests (ours, round-robin) and
   --n-baseline (the dashboard: each takes seconds). Prints p50 / p95 and baseline / ours.

Latencies are client-side wall times (request sent .. body read). The machine is noisy: read the ratios,
which are measured side by side, more than the absolute numbers. Exit status is 0 whether or not the targets
are met (it is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_P95_MS = 50.0
TARGET_RATIO = 20.0


# ------------------------------------------------------------------ the servers (children of this script)


def _serve_ours(url: str, port: int, home: Path) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.context import Context
    from service.settings import Settings

    settings = Settings(database_url=url, optuna_schema="optuna", home=home, artifact_root=str(home / "artifacts"),
                        _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, url)
    try:  # as `stsweep serve` (service/api/serve.py:serve_api), without the per-request access log
        uvicorn.run(create_app(ctx), host="127.0.0.1", port=port, log_level="warning")
    finally:
        ctx.close()


def _serve_dashboard(url: str, port: int) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    from service.store import optuna_bridge

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    app = optuna_dashboard.wsgi(optuna_bridge.storage(url, "optuna"))
    with make_server("127.0.0.1", port, app, handler_class=Quiet) as server:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, url: str, logdir: Path, ready: Callable[[int], bool], timeout: float = 60) -> Iterator[int]:
    """Run `kind` (ours | dashboard) in a subprocess; yields its port once `ready(port)`; stops it on exit."""
    port = _free_port()
    log_path = logdir / f"{kind}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--url", url, "--port", str(port),
                                 "--home", str(logdir / f"{kind}-home")],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while not ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _http_ok(path: str) -> Callable[[int], bool]:
    import httpx

    def check(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _tcp_open(port: int) -> bool:
    """Readiness without a request (an HTTP request to the dashboard could warm its caches)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ timing


@dataclass
class Series:
    label: str
    cold_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    size_bytes: int = 0

    def pct(self, q: float) -> float:
        """Nearest-rank percentile."""
        xs = sorted(self.samples_ms)
        return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        return self.pct(95)


def timed_response(client, url: str):  # type: ignore[no-untyped-def]
    """(milliseconds, the response) of one GET that must answer 200, its body read whole."""
    t = time.perf_counter()
    r = client.get(url)
    body = r.content
    dt = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} answered {r.status_code}: {body[:500]!r}")
    return dt, r


def timed_get(client, url: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    dt, r = timed_response(client, url)
    return dt, len(r.content)


def measure(args: argparse.Namespace) -> int:
    import httpx

    from bench.fill import filled_study

    deep = args.deep_offset if args.deep_offset is not None else max(0, args.trials - 1000)
    logdir = Path(tempfile.mkdtemp(prefix="stsweep_bench_logs_"))
    t_start = time.perf_counter()
    load = [os.getloadavg()[0]]
    try:  # the servers' logs: a failed start prints its tail
        with filled_study(args.trials, args.optuna_method) as f, \
                server("ours", f.database_url, logdir, _http_ok("/healthz")) as our_port, \
                server("dashboard", f.database_url, logdir, _tcp_open) as dash_port:
            ours_base = f"http://127.0.0.1:{our_port}"
            ours = [
                (Series("ours    GET /v1/studies/{id}"), f"{ours_base}/v1/studies/{f.study_id}"),
                (Series("ours    GET /v1/studies/{id}/trials?limit=100"),
                 f"{ours_base}/v1/studies/{f.study_id}/trials?limit=100"),
                (Series(f"ours    GET /v1/studies/{{id}}/trials?limit=100&offset={deep}"),
                 f"{ours_base}/v1/studies/{f.study_id}/trials?limit=100&offset={deep}"),
            ]
            floor = (Series("ours    GET /healthz (no database: the floor)"), f"{ours_base}/healthz")
            base = Series("optuna-dashboard GET /api/studies/{id}")
            base_url = f"http://127.0.0.1:{dash_port}/api/studies/{f.optuna_study_id}"

            with httpx.Client(headers={"Authorization": f"Bearer {f.token}"}, timeout=600) as client:
                for s, url in [*ours, floor]:  # cold: the first request each endpoint sees
                    s.cold_ms, s.size_bytes = timed_get(client, url)
                for _ in range(args.warmup):
                    for _s, url in [*ours, floor]:
                        timed_get(client, url)
                for _ in range(args.n):  # round-robin, so noise spreads over all of them
                    for s, url in [*ours, floor]:
                        s.samples_ms.append(timed_get(client, url)[0])
            print(f"ours done ({args.n} each); optuna-dashboard: 1 cold + {args.n_baseline} warm requests ...",
                  flush=True)
            with httpx.Client(timeout=600) as client:
                base.cold_ms, base.size_bytes = timed_get(client, base_url)
                for _ in range(args.n_baseline):
                    base.samples_ms.append(timed_get(client, base_url)[0])
            total = time.perf_counter() - t_start
            load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    report(f, ours=[s for s, _ in ours], floor=floor[0], base=base, args=args, total_s=total, load=load)
    return 0


def report(f, *, ours: list[Series], floor: Series, base: Series, args: argparse.Namespace,  # type: ignore[no-untyped-def]
           total_s: float, load: list[float]) -> None:
    w = max(len(s.label) for s in [*ours, floor, base])
    head = (f"{'endpoint':<{w}}  {'n':>3}  {'cold ms':>8}  {'p50 ms':>8}  {'p95 ms':>8}  {'body':>9}  "
            f"{'base/ours p50':>13}  {'base/ours p95':>13}")
    print()
    print(f"{f.n_trials} trials (4 params, 4 intermediate values each); machine: {os.cpu_count()} CPU cores, "
          f"load average {load[0]:.1f} at start, {load[-1]:.1f} at end; fill "
          + ", ".join(f"{k} {v:.1f}s" for k, v in f.timings.items()))
    print(head)
    print("-" * len(head))
    for s in ours:
        print(f"{s.label:<{w}}  {len(s.samples_ms):>3}  {s.cold_ms:>8.1f}  {s.p50:>8.1f}  {s.p95:>8.1f}  "
              f"{_size(s.size_bytes):>9}  {base.p50 / s.p50:>12.0f}x  {base.p95 / s.p95:>12.0f}x")
    print(f"{floor.label:<{w}}  {len(floor.samples_ms):>3}  {floor.cold_ms:>8.1f}  {floor.p50:>8.1f}  "
          f"{floor.p95:>8.1f}  {_size(floor.size_bytes):>9}")
    print(f"{base.label:<{w}}  {len(base.samples_ms):>3}  {base.cold_ms:>8.1f}  {base.p50:>8.1f}  {base.p95:>8.1f}  "
          f"{_size(base.size_bytes):>9}  {'(baseline)':>13}")
    print()
    targeted = ours[:2]  # the targets: the study and one (the first) page of trials
    worst_p95 = max(s.p95 for s in targeted)
    worst_ratio = min(min(base.p50 / s.p50, base.p95 / s.p95) for s in targeted)
    print(f"targets (issue 2; study + first trials page): p95 < {TARGET_P95_MS:.0f} ms -> worst {worst_p95:.1f} ms "
          f"[{'met' if worst_p95 < TARGET_P95_MS else 'MISSED'}]; >= {TARGET_RATIO:.0f}x faster than the baseline "
          f"-> worst ratio {worst_ratio:.0f}x [{'met' if worst_ratio >= TARGET_RATIO else 'MISSED'}]")
    print(f"deep page (offset {args.deep_offset if args.deep_offset is not None else max(0, f.n_trials - 1000)}, "
          f"not in the targets): p95 {ours[2].p95:.1f} ms")
    print(f"total run {total_s:.0f}s (fill, servers, {args.warmup} warm-up + {args.n} timed requests per endpoint "
          f"of ours, 1 cold + {args.n_baseline} warm of the baseline)")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=50, help="timed requests per endpoint of ours")
    ap.add_argument("--n-baseline", type=int, default=20, help="timed warm requests to optuna-dashboard")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests per endpoint of ours after the cold one")
    ap.add_argument("--deep-offset", type=int, default=None, help="offset of the deep trials page (trials-1000)")
    ap.add_argument("--optuna-method", choices=["sql", "add_trials"], default="sql",
                    help="how bench/fill.py fills Optuna's tables")
    ap.add_argument("--serve", choices=["ours", "dashboard"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve == "ours":
        _serve_ours(args.url, args.port, args.home)
        return 0
    if args.serve == "dashboard":
        _serve_dashboard(args.url, args.port)
        return 0
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
