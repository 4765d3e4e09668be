"""Time-to-quality bench: the numbers every table is built from (best-so-far curves, compute to reach a target)
and the real run's table."""

from __future__ import annotations

import math
from typing import Any


def best_so_far(trials: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(CPU seconds when a trial's value became known, best value so far), for complete trials in budget."""
    done = sorted((t for t in trials if t.get("state") == "complete" and t.get("value") is not None
                   and t.get("cpu_end") is not None), key=lambda t: t["cpu_end"])
    out: list[tuple[float, float]] = []
    best = -math.inf
    for t in done:
        if t["value"] > best:
            best = t["value"]
            out.append((float(t["cpu_end"]), best))
    return out


def compute_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    for cpu, value in curve:
        if value >= target - 1e-12:
            return cpu
    return math.inf


def final_best(curve: list[tuple[float, float]]) -> float | None:
    return curve[-1][1] if curve else None


def nearest_rank(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def fmt(x: float | None, spec: str = ".1f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def counts(trials: list[dict[str, Any]]) -> tuple[int, int, int, int]:
    """(started, completed in budget, pruned in budget, examples trained)."""
    return (len(trials), sum(t["state"] == "complete" for t in trials), sum(t["state"] == "pruned" for t in trials),
            sum(int(t.get("examples_seen") or 0) for t in trials))


def print_real(doc: dict[str, Any], names: dict[str, str], goal: float) -> None:
    res = doc["results"]
    a_curve = best_so_far(res["a"]["trials"]) if "a" in res else []
    target = final_best(a_curve)
    c_a = compute_to_reach(a_curve, target) if target is not None else None
    s = doc["sizes"]
    print()
    print(f"time to quality, real run {doc['when']}: budget {doc['args']['budget']:.0f} CPU-s per method, "
          f"{s['train']} train / {s['dev']} dev / {s['test']} test pairs (seed {s['seed']}), evaluation every "
          f"{s['every']} examples, {doc['args']['threads']} torch threads; total wall {doc['wall']:.0f} s")
    print(f"target = (a)'s final best dev {fmt(target, '.4f')}, reached by (a) at {fmt(c_a)} CPU-s")
    head = (f"{'method':<54} {'CPU-s to (a) best':>17} {'ratio':>6} {'best dev':>9} {'test of winner':>14} "
            f"{'trials s/c/p':>13} {'examples':>9}")
    print(head)
    print("-" * len(head))
    ratios: dict[str, float] = {}
    for m, r in res.items():
        curve = best_so_far(r["trials"])
        reach = compute_to_reach(curve, target) if target is not None else math.inf
        ratio = reach / c_a if c_a else math.inf
        ratios[m] = ratio
        winner = max((t for t in r["trials"] if t["state"] == "complete" and t.get("value") is not None),
                     key=lambda t: t["value"], default=None)
        st, co, pr, ex = counts(r["trials"])
        extra = "" if not r.get("rc") else f"  (exit {r['rc']})"
        print(f"{names[m]:<54} {fmt(reach):>17} {fmt(ratio, '.2f'):>6} {fmt(final_best(curve), '.4f'):>9} "
              f"{fmt(winner.get('test') if winner else None, '.4f'):>14} {f'{st}/{co}/{pr}':>13} {ex:>9}{extra}")
    print("trials s/c/p: started / completed within the budget / pruned within the budget (the rest were cut by "
          "the budget); examples: training examples processed")
    stsweep = {m: x for m, x in ratios.items() if m in "cde"}
    if stsweep:
        m, best = min(stsweep.items(), key=lambda kv: kv[1])
        print(f"headline: best stsweep method {names[m]} needs {fmt(best, '.2f')} x (a)'s compute to reach (a)'s "
              f"final best (goal <= {goal}) [{'met' if best <= goal else 'MISSED'}]")
