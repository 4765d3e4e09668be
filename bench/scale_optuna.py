"""A worker's Optuna cost against the size of a study's history: before (Optuna's own cached storage, which
loads every trial) and after (service/store/optuna_history.py's bounded view), in the same run.

    python bench/scale_optuna.py                  # 10^3, 10^4, 10^5 trials; search quality on 5 seeds
    python bench/scale_optuna.py --sizes 1000 10000 --quality-trials 100 --seeds 3

(a) Join: a fresh process's first read of the study (what `load_study` and the first sample cost).
(b) Ask: one new trial sampled as a worker samples it (TPE, multivariate, constant liar, seeded), its four
    parameters over the real search-space shape, then told FAIL: the median of `--asks`.
Trials are COPYed into Optuna's tables as its RDBStorage stores them (bench/fill.py), one study per size.
(c) Search quality: a synthetic objective over the same space, `--quality-trials` sequential trials per seed,
    unbounded vs the default bound (identical below it: checked) vs a small bound (recent 50, best 10, so most
    of the run is past it): the best value after N trials, mean and spread over the seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.fill import DISTRIBUTIONS, create_database, drop_database, fill_optuna_sql, generate_trials  # noqa: E402
from bench.fill import make_settings  # noqa: E402
from service.context import Context  # noqa: E402
from service.store.optuna_history import BoundedStorage, HistoryBound  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def _storage(ctx: Context, kind: str, bound: HistoryBound | None = None) -> optuna.storages.BaseStorage:
    if kind == "optuna":
        return optuna.storages._CachedStorage(ctx.optuna_storage)  # what optuna.load_study(storage=rdb) uses
    return BoundedStorage(ctx.optuna_storage, bound)


def _ask(study: optuna.Study) -> float:
    t = time.perf_counter()
    trial = study.ask()
    for name, dist in DISTRIBUTIONS.items():
        trial._suggest(name, dist)
    took = time.perf_counter() - t
    study.tell(trial, state=TrialState.FAIL)
    return took


def measure(ctx: Context, name: str, kind: str, asks: int) -> tuple[float, float]:
    """(join seconds, median ask seconds) of a fresh process on the study `name`."""
    store = _storage(ctx, kind)
    t = time.perf_counter()
    study = optuna.load_study(study_name=name, storage=store, sampler=_sampler(0))
    store.get_all_trials(study._study_id, deepcopy=False)
    join = time.perf_counter() - t
    return join, statistics.median(_ask(study) for _ in range(asks))


def cost_table(ctx: Context, sizes: list[int], asks: int) -> list[str]:
    lines = ["| trials | join, Optuna | join, bounded | ratio | ask, Optuna | ask, bounded | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        name = f"scale-{n}"
        optuna.create_study(storage=ctx.optuna_storage, study_name=name, direction="maximize")
        t = time.perf_counter()
        fill_optuna_sql(ctx, name, generate_trials(n, seed=n))
        print(f"filled {n} trials in {time.perf_counter() - t:.1f} s", flush=True)
        before = measure(ctx, name, "optuna", asks)
        after = measure(ctx, name, "bounded", asks)
        lines.append(f"| {n:,} | {before[0] * 1e3:,.0f} ms | {after[0] * 1e3:,.0f} ms | "
                     f"{before[0] / after[0]:.1f}x | {before[1] * 1e3:,.1f} ms | {after[1] * 1e3:,.1f} ms | "
                     f"{before[1] / after[1]:.1f}x |")
        print(lines[-1], flush=True)
    return lines


def objective(params: dict[str, Any]) -> float:
    """A synthetic Spearman over the real space: best near lr 4e-5, batch 16, warmup 0.1, CoSENT."""
    lr = math.log10(params["learning_rate"])
    score = 0.89 - 0.02 * (lr - math.log10(4e-5)) ** 2 - 0.015 * abs(params["warmup_ratio"] - 0.1) * 10
    score -= {16: 0.0, 32: 0.004, 64: 0.01}[params["per_device_train_batch_size"]]
    return score - (0.0 if params["loss"] == "CoSENTLoss" else 0.006)


def best_after(ctx: Context, kind: str, bound: HistoryBound | None, seed: int, n: int) -> float:
    name = f"quality-{kind}-{bound.recent if bound else 0}-{seed}"
    optuna.create_study(storage=ctx.optuna_storage, study_name=name, direction="maximize")
    study = optuna.load_study(study_name=name, storage=_storage(ctx, kind, bound), sampler=_sampler(seed))
    for _ in range(n):
        trial = study.ask()
        params = {k: trial._suggest(k, d) for k, d in DISTRIBUTIONS.items()}
        study.tell(trial, objective(params))
    return float(study.best_value)


def quality_table(ctx: Context, seeds: int, n: int) -> list[str]:
    runs = {"Optuna, unbounded": ("optuna", None), "bounded, default (900 + 100)": ("bounded", HistoryBound()),
            "bounded, small (50 + 10)": ("bounded", HistoryBound(recent=50, best=10))}
    got = {label: [best_after(ctx, kind, bound, s, n) for s in range(seeds)] for label, (kind, bound) in runs.items()}
    same = got["Optuna, unbounded"] == got["bounded, default (900 + 100)"]
    lines = [f"Best value after {n} trials, {seeds} seeds (synthetic objective, optimum 0.89):", "",
             "| history the sampler sees | mean best | min | max |", "|---|---:|---:|---:|"]
    for label, values in got.items():
        lines.append(f"| {label} | {statistics.mean(values):.5f} | {min(values):.5f} | {max(values):.5f} |")
    lines.append("")
    lines.append(f"Default bound identical to unbounded on every seed (below the bound): {same}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--asks", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quality-trials", type=int, default=150)
    args = parser.parse_args(argv)
    db_name, url = create_database("stsweep_scale_optuna")
    ctx = Context(make_settings(url, Path(tempfile.mkdtemp(prefix="stsweep_scale_optuna_"))), url)
    try:
        lines = cost_table(ctx, args.sizes, args.asks)
        lines += [""] + quality_table(ctx, args.seeds, args.quality_trials)
        print("\n".join(lines))
    finally:
        ctx.close()
        drop_database(db_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
