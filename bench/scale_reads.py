"""Part (b)'s reads for bench/scale.py: what the dashboard and a scraper poll, timed against the live API.

The API runs as `stsweep serve` runs it (uvicorn subprocess, `create_app(ctx)`, its reaper thread included; see
bench/api_bench.py `server`). Each read is requested once cold (reported apart), then `n` times round-robin;
latencies are client wall times (request sent .. body read), p50 / p95 by nearest rank.

- `list`: `GET /v1/studies?limit=500` (the dashboard's study list)
- `detail`: `GET /v1/studies/{id}` of a running study
- `trials_first` / `trials_deep`: `GET .../trials?limit=100`, and at `offset` = trials - 100
- `trials_keyset`: the same deep page through a keyset cursor, when the API has one: a query parameter of
  `list_trials` named like a cursor (`cursor`, `after`, ...) in /openapi.json; its value is the cursor that the
  page before the deep one answers with (a top-level field named like a cursor), or else the number before it
- `changes`: `GET .../changes?cursor=C` as the dashboard polls it: C is the cursor the previous answer gave
- `metrics`: `GET /metrics`
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from bench.api_bench import timed_response

CURSOR_PARAMS = ("cursor", "after", "after_number", "start_after", "page_token", "next", "from_number")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def _get(client: Any, url: str) -> tuple[float, Any]:
    return timed_response(client, url)  # type: ignore[no-any-return]


def keyset_param(client: Any, base: str) -> str | None:
    """The cursor parameter of the trial list, if the API has one."""
    spec = client.get(f"{base}/openapi.json").json()
    for path, ops in spec.get("paths", {}).items():
        op = ops.get("get", {})
        if path.endswith("/trials") and "{study_id}" in path:
            for p in op.get("parameters", []):
                if p.get("in") == "query" and p.get("name") in CURSOR_PARAMS:
                    return str(p["name"])
    return None


def _cursor_in(body: Any) -> Any:
    if isinstance(body, dict):
        for key in ("next_cursor", "cursor", "next", "after"):
            if body.get(key) not in (None, ""):
                return body[key]
    return None


def reads(client: Any, base: str, study_id: str, trials: int) -> dict[str, str]:
    """{name: url} of the reads, the keyset page included when the API has a cursor."""
    deep = max(0, trials - 100)
    out = {
        "list": f"{base}/v1/studies?limit=500",
        "detail": f"{base}/v1/studies/{study_id}",
        "trials_first": f"{base}/v1/studies/{study_id}/trials?limit=100",
        "trials_deep": f"{base}/v1/studies/{study_id}/trials?limit=100&offset={deep}",
    }
    param = keyset_param(client, base)
    if param is not None and deep >= 100:
        before = client.get(f"{base}/v1/studies/{study_id}/trials?limit=100&offset={deep - 100}").json()
        cursor = _cursor_in(before)
        value = cursor if cursor is not None else deep - 1
        out["trials_keyset"] = f"{base}/v1/studies/{study_id}/trials?limit=100&{param}={value}"
    out["metrics"] = f"{base}/metrics"
    return out


def changes_cursor(client: Any, base: str, study_id: str) -> int:
    """The dashboard's steady state: follow `more` from 0 to the current cursor (untimed)."""
    cursor = 0
    for _ in range(10_000):
        body = client.get(f"{base}/v1/studies/{study_id}/changes?cursor={cursor}").json()
        cursor = int(body["cursor"])
        if not body.get("more"):
            break
    return cursor


def measure(client: Any, base: str, study_id: str, trials: int, n: int, warmup: int = 2) -> dict[str, Any]:
    urls = reads(client, base, study_id, trials)
    samples: dict[str, list[float]] = {k: [] for k in [*urls, "changes"]}
    cold: dict[str, float] = {}
    size: dict[str, int] = {}
    for k, url in urls.items():
        cold[k], r = _get(client, url)
        size[k] = len(r.content)
    t = time.perf_counter()
    cursor = changes_cursor(client, base, study_id)
    cold["changes"] = (time.perf_counter() - t) * 1000  # catching up from cursor 0, all pages
    for i in range(warmup + n):
        for k, url in urls.items():
            dt, _ = _get(client, url)
            if i >= warmup:
                samples[k].append(dt)
        dt, r = _get(client, f"{base}/v1/studies/{study_id}/changes?cursor={cursor}")
        size["changes"] = len(r.content)
        cursor = int(r.json()["cursor"])
        if i >= warmup:
            samples["changes"].append(dt)
    return {k: {"p50_ms": statistics.median(v), "p95_ms": _pct(v, 95), "max_ms": max(v), "n": len(v),
                "cold_ms": cold.get(k), "bytes": size.get(k)} for k, v in samples.items()}
