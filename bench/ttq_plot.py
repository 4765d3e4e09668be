"""Time-to-quality bench: the plot (best dev score so far against CPU seconds, one colour per method; the replay's
median and p10-p90 band over seeds, the real run's step lines dashed on top) and, with a budget scan, a second
panel: the replay's ratio to (a) against the budget (median, p10-p90 band clipped to the panel)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.ttq_report import best_so_far

COLOURS = {"a": "tab:gray", "b": "tab:orange", "c": "tab:blue", "d": "tab:green", "e": "tab:purple"}


def _value_at(curve: list[tuple[float, float]], x: float) -> float:
    v = math.nan
    for cpu, best in curve:
        if cpu > x:
            break
        v = best
    return v


def draw(path: Path, runs: dict[str, list[Any]], real: dict[str, Any] | None, names: dict[str, str],
         budget: float, scan: dict[float, dict[str, dict[str, Any]]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.linspace(0, budget, 241)
    if scan:
        fig, (ax, ax_scan) = plt.subplots(1, 2, figsize=(16, 6), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
        _draw_scan(ax_scan, scan, names)
    else:
        fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    lows = []
    for m, reps in runs.items():
        # Over every seed, one with no complete trial yet counting as the lowest: each statistic then never falls
        # (a seed's best so far never does), and is drawn once that many seeds have a value.
        ys = np.array([[_value_at(r.curve, x) for x in xs] for r in reps])
        ys = np.where(np.isnan(ys), -np.inf, ys)
        med, p10, p90 = (np.percentile(ys, q, axis=0, method="inverted_cdf") for q in (50, 10, 90))
        med, p10, p90 = (np.where(np.isfinite(v), v, np.nan) for v in (med, p10, p90))
        ax.plot(xs, med, color=COLOURS[m], lw=2, label=f"{names[m]} (replay, median of {len(reps)} seeds)")
        ax.fill_between(xs, p10, p90, color=COLOURS[m], alpha=0.15, lw=0)
        lows.extend(v for v in p10 if np.isfinite(v))
    if real:
        rb = real["args"]["budget"]
        for m, r in real["results"].items():
            curve = best_so_far(r["trials"])
            if not curve:
                continue
            cx = [c for c, _ in curve] + [rb]
            cy = [v for _, v in curve] + [curve[-1][1]]
            ax.step(cx, cy, where="post", ls="--", color=COLOURS.get(m, "black"), lw=1.5,
                    label=f"{names[m]} (real run)")
            lows.extend(cy)
    if lows:
        ax.set_ylim(max(min(lows) - 0.005, np.percentile(lows, 2) - 0.01), None)
    ax.set_xlabel("CPU seconds (training process, user + sys)")
    ax.set_ylabel("best dev score so far (Spearman, cosine)")
    ax.set_title("Time to quality: all-MiniLM-L6-v2 on STS-b subsets (replay bands: p10-p90 over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


RATIO_CLIP = 8.0  # the scan panel's top: "never reached" (inf) is drawn there


def _draw_scan(ax: Any, scan: dict[float, dict[str, dict[str, Any]]], names: dict[str, str]) -> None:
    import matplotlib.ticker

    budgets = sorted(scan)
    methods = [m for m in next(iter(scan.values())) if m != "a"]
    for m in methods:
        clip = [min(scan[b][m][k], RATIO_CLIP) for k in ("ratio_p10", "ratio_p50", "ratio_p90") for b in budgets]
        n = len(budgets)
        p10, med, p90 = clip[:n], clip[n:2 * n], clip[2 * n:]
        ax.plot(budgets, med, marker="o", color=COLOURS[m], lw=2, label=names[m])
        ax.fill_between(budgets, p10, p90, color=COLOURS[m], alpha=0.08, lw=0)
    ax.axhline(1.0, color=COLOURS["a"], lw=1.5, label=f"{names['a']} (1 by definition)")
    ax.axhline(0.4, color="black", lw=1, ls=":", label="goal 0.4")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.05, RATIO_CLIP * 1.05)
    ax.set_xticks(budgets, [f"{b:.0f}" for b in budgets])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("budget per method (CPU seconds)")
    ax.set_ylabel(f"CPU-s to reach (a)'s final best / (a)'s (median; p10-p90 band; {RATIO_CLIP:g} = never)")
    ax.set_title("Replay: the ratio as the budget grows")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
