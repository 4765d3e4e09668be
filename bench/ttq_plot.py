"""Time-to-quality bench: the plot (best dev score so far against CPU seconds, one colour per method; the replay's
median and p10-p90 band over seeds, the real run's step lines dashed on top)."""

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
         budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.linspace(0, budget, 241)
    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    lows = []
    for m, reps in runs.items():
        ys = np.array([[_value_at(r.curve, x) for x in xs] for r in reps])
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(ys, axis=0)
                p10 = np.nanpercentile(ys, 10, axis=0)
                p90 = np.nanpercentile(ys, 90, axis=0)
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
