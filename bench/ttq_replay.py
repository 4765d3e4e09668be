"""Time-to-quality bench, replay: the methods' samplers and pruners against the grid's recorded learning curves.

In memory, seconds. Each replayed trial samples a grid configuration, "trains" by reading that configuration's
curve point by point (reporting to the pruner as the method would), and costs the CPU seconds the grid recorded
up to where it stopped (the end, or the point where it was pruned). A trial that would pass the budget is cut and
does not count. The value of a trial is what the method would record: the dev score at the end for (a) and (b)
(the plain trainer keeps its last state), the best point of the curve for stsweep (it keeps the best state).

- (a) random: optuna RandomSampler(seed), no pruning.
- (b) HF-style: TPESampler and MedianPruner() (Optuna's defaults) with step = global_step, reported at the
  evaluation points a step-based eval_steps (every // 16 steps) gives each batch size. TPE is seeded apart from
  (a) (seed + B_SEED_OFFSET): its start-up trials would otherwise be (a)'s very configurations. Its cost at a
  point is the grid's, which evaluated every `every` examples (more often than (b) does at batch 32 and 64).
- (c), (d), (e): stsweep's own `optuna_bridge.make_sampler(spec, trial_number)` (re-seeded per slot, as the worker
  does) and `make_pruner(spec)` from a StudySpec over the grid's values, step = examples seen; (e) also gets each
  trial's planned examples as the worker sets them (`stsweep:planned_examples`).

Also the bias analysis: is pruning at equal examples biased against longer schedules?
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from bench.ttq_data import BATCH_SIZES, EPOCHS, GRID_LRS, GRID_WARMUP, GRID_WEIGHT_DECAY, LOSSES, MAX_SEQ_LENGTH
from bench.ttq_report import best_so_far, compute_to_reach, final_best, fmt, nearest_rank

optuna.logging.set_verbosity(optuna.logging.WARNING)

B_SEED_OFFSET = 10_007
STSWEEP_PRUNERS = {"c": {"name": "median"}, "d": {"name": "successive_halving"},
                   "e": {"name": "median", "compare_at": "schedule_fraction"}}


@dataclass
class GridRow:
    params: dict[str, Any]
    examples: list[int]
    values: list[float]
    cpu: list[float]
    planned: int
    test: float | None

    @property
    def final(self) -> float:
        return self.values[-1]

    @property
    def best(self) -> float:
        return max(self.values)


def grid_key(lr: float, bs: int, ep: int, loss: str) -> tuple[float, int, int, str]:
    return (float(f"{float(lr):g}"), int(bs), int(ep), str(loss))


def load_grid(path: Path, sizes: dict[str, Any] | None = None) -> dict[tuple[float, int, int, str], GridRow]:
    grid = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if sizes is not None and r.get("sizes") != sizes:
            continue
        p = r["params"]
        grid[grid_key(p["learning_rate"], p["per_device_train_batch_size"], p["num_train_epochs"], p["loss"])] = \
            GridRow(p, r["examples"], r["values"], r["cpu"], int(r["planned_examples"]), r.get("test"))
    return grid


def complete_space(grid: dict[Any, GridRow]) -> tuple[list[int], list[str]]:
    """(batch sizes, losses) of the largest recorded complete sub-grid (every lr x epochs for each): the replay
    searches over it (the grid is trained in that order: --grid resumes when it did not fit in one session)."""
    for sizes in (list(BATCH_SIZES), list(BATCH_SIZES[:2])):
        losses = [loss for loss in LOSSES if all(grid_key(lr, bs, ep, loss) in grid
                                                 for lr in GRID_LRS for bs in sizes for ep in EPOCHS)]
        if losses:
            return sizes, losses
    return [], []


def replay_spec(method: str, seed: int, every: int, sizes: list[int], losses: list[str]) -> Any:
    from service.core.spec import StudySpec

    return StudySpec.model_validate({
        "name": f"replay-{method}", "task": "scored_pairs",
        "data": {"train": {"path": "replay/train.jsonl"}, "eval": {"path": "replay/dev.jsonl"}},
        "search_space": {
            "learning_rate": {"distribution": "categorical", "choices": list(GRID_LRS)},
            "per_device_train_batch_size": {"distribution": "categorical", "choices": list(sizes)},
            "num_train_epochs": {"distribution": "categorical", "choices": list(EPOCHS)},
            "warmup_ratio": GRID_WARMUP, "weight_decay": GRID_WEIGHT_DECAY,
            "loss": {"distribution": "categorical", "choices": list(losses)}, "max_seq_length": MAX_SEQ_LENGTH},
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": STSWEEP_PRUNERS[method],
        "evaluation": {"every_n_examples": every},
        "budget": {"n_trials": 1000, "max_concurrent_trials": 1},
    })


@dataclass
class Replayed:
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def curve(self) -> list[tuple[float, float]]:
        return best_so_far(self.trials)


def replay(method: str, seed: int, grid: dict[Any, GridRow], budget: float, every: int, sizes: list[int],
           losses: list[str], max_trials: int = 1000) -> Replayed:
    from service.store import optuna_bridge
    from service.store.fraction_pruner import PLANNED_ATTR

    spec = replay_spec(method, seed, every, sizes, losses) if method in STSWEEP_PRUNERS else None
    if method == "a":
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                    pruner=optuna.pruners.NopPruner())
    elif method == "b":
        # Seeded apart from (a): TPE's start-up trials are a RandomSampler with the same seed, which would sample
        # exactly (a)'s configurations (stsweep's samplers are re-seeded per slot from a hash, so apart already).
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed + B_SEED_OFFSET))
    else:
        assert spec is not None
        study = optuna.create_study(direction="maximize", sampler=optuna_bridge.make_sampler(spec),
                                    pruner=optuna_bridge.make_pruner(spec))
    out = Replayed()
    spent = 0.0
    for number in range(max_trials):
        if spec is not None:
            study.sampler = optuna_bridge.make_sampler(spec, number)
        trial = study.ask()
        if spec is not None:
            p = optuna_bridge.sample_params(trial, spec)
        else:
            p = {"learning_rate": trial.suggest_categorical("learning_rate", list(GRID_LRS)),
                 "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size",
                                                                          list(sizes)),
                 "num_train_epochs": trial.suggest_categorical("num_train_epochs", list(EPOCHS)),
                 "loss": trial.suggest_categorical("loss", list(losses))}
        row = grid[grid_key(p["learning_rate"], p["per_device_train_batch_size"], p["num_train_epochs"], p["loss"])]
        bs = int(p["per_device_train_batch_size"])
        if method == "e":
            trial.set_user_attr(PLANNED_ATTR, row.planned)
        stop_i = len(row.examples) - 1
        pruned = False
        if method != "a":
            hf_every = (every // min(BATCH_SIZES)) * bs  # eval_steps in steps -> examples for this batch size
            for i, (ex, v) in enumerate(zip(row.examples, row.values)):
                if method == "b" and ex % hf_every and ex != row.planned:
                    continue
                trial.report(v, ex // bs if method == "b" else ex)
                if trial.should_prune():
                    stop_i, pruned = i, True
                    break
        cost = row.cpu[stop_i]
        if spent + cost > budget:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        spent += cost
        value = None if pruned else (row.best if spec is not None else row.final)
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
        out.trials.append({"number": number, "params": p, "state": "pruned" if pruned else "complete",
                           "value": value, "cpu_end": spent, "examples_seen": row.examples[stop_i],
                           "epochs": int(p["num_train_epochs"]), "full_value": row.best if spec else row.final,
                           "stopped_at": row.examples[stop_i], "planned": row.planned})
    return out


# ------------------------------------------------------------------ bias analysis


def grid_bias(grid: dict[Any, GridRow]) -> list[str]:
    """For each (lr, batch, loss): the 2-epoch curve against the 1-epoch one at equal examples and at their ends."""
    lines = ["grid: 2-epoch vs 1-epoch curve of the same (lr, batch, loss); d = 2-epoch minus 1-epoch dev score"]
    lines.append(f"  {'lr':>7} {'bs':>3} {'loss':<21} {'d at 1st eval':>13} {'d at 1 epoch':>12} "
                 f"{'d at the ends':>13} {'d best-state':>12}")
    behind_first = behind_mid = ahead_end = ahead_best = n = 0
    for lr in GRID_LRS:
        for bs in BATCH_SIZES:
            for loss in LOSSES:
                one, two = grid.get(grid_key(lr, bs, 1, loss)), grid.get(grid_key(lr, bs, 2, loss))
                if one is None or two is None:
                    continue
                at = dict(zip(two.examples, two.values))
                d_first = at.get(one.examples[0], math.nan) - one.values[0]
                d_mid = at.get(one.planned, math.nan) - one.final  # at 1 epoch's worth of examples
                d_end = two.final - one.final
                d_best = two.best - one.best
                n += 1
                behind_first += d_first < 0
                behind_mid += d_mid < 0
                ahead_end += d_end > 0
                ahead_best += d_best > 0
                lines.append(f"  {lr:>7g} {bs:>3} {loss:<21} {d_first:>+13.4f} {d_mid:>+12.4f} {d_end:>+13.4f} "
                             f"{d_best:>+12.4f}")
    lines.append(f"  of {n} pairs: 2-epoch behind at the first evaluation {behind_first}, behind after one epoch's "
                 f"examples {behind_mid}; ahead at the ends {ahead_end} (final state), {ahead_best} (best state)")
    return lines


def pruning_bias(runs: dict[str, list[Replayed]], names: dict[str, str]) -> list[str]:
    lines = ["replay: who gets pruned, by planned epochs (all seeds)"]
    for m in ("c", "d", "e"):
        if m not in runs:
            continue
        by_ep = {1: [0, 0], 2: [0, 0]}  # epochs -> [started, pruned]
        regret = [0, 0]  # pruned 2-epoch trials: [that would have ended above the median final, all]
        for rep in runs[m]:
            finals = [t["value"] for t in rep.trials if t["state"] == "complete"]
            med = statistics.median(finals) if finals else math.inf
            for t in rep.trials:
                by_ep[t["epochs"]][0] += 1
                if t["state"] == "pruned":
                    by_ep[t["epochs"]][1] += 1
                    if t["epochs"] == 2:
                        regret[1] += 1
                        regret[0] += t["full_value"] > med
        f1 = by_ep[1][1] / by_ep[1][0] if by_ep[1][0] else math.nan
        f2 = by_ep[2][1] / by_ep[2][0] if by_ep[2][0] else math.nan
        lines.append(f"  {names[m]:<54} pruned: 1-epoch {by_ep[1][1]}/{by_ep[1][0]} ({100 * f1:.0f}%), 2-epoch "
                     f"{by_ep[2][1]}/{by_ep[2][0]} ({100 * f2:.0f}%); pruned 2-epoch trials that would have ended "
                     f"above their replay's median final: {regret[0]}/{regret[1]}")
    return lines


# ------------------------------------------------------------------ main


def replay_all(methods: str, seeds: int, grid: dict[Any, GridRow], budget: float, every: int, sizes: list[int],
               losses: list[str]) -> dict[str, list[Replayed]]:
    return {m: [replay(m, s, grid, budget, every, sizes, losses) for s in range(seeds)] for m in methods}


def summarize(runs: dict[str, list[Replayed]]) -> dict[str, dict[str, Any]]:
    """Per method: the ratio (CPU-s to reach (a)'s final best of the same seed / (a)'s CPU-s to reach it) and the
    final best dev, as median and p10 / p90 over seeds; how many seeds reached (a)'s best; median trials and
    pruned trials per seed."""
    a_curves = [r.curve for r in runs.get("a", [])]
    summary: dict[str, dict[str, Any]] = {}
    for m, reps in runs.items():
        ratios, bests = [], []
        for s, rep in enumerate(reps):
            target = final_best(a_curves[s]) if a_curves else None
            c_a = compute_to_reach(a_curves[s], target) if target is not None else math.nan
            reach = compute_to_reach(rep.curve, target) if target is not None else math.inf
            ratios.append(reach / c_a if c_a else math.inf)
            bests.append(final_best(rep.curve) or math.nan)
        summary[m] = {"ratio_p50": nearest_rank(ratios, 50), "ratio_p10": nearest_rank(ratios, 10),
                      "ratio_p90": nearest_rank(ratios, 90), "reached": sum(math.isfinite(x) for x in ratios),
                      "n": len(reps), "best_p50": nearest_rank(bests, 50), "best_p10": nearest_rank(bests, 10),
                      "best_p90": nearest_rank(bests, 90),
                      "trials": statistics.median(len(r.trials) for r in reps),
                      "pruned": statistics.median(sum(t["state"] == "pruned" for t in r.trials) for r in reps)}
    return summary


def budget_scan(args: argparse.Namespace, grid: dict[Any, GridRow], sizes: list[int], losses: list[str],
                names: dict[str, str]) -> dict[float, dict[str, dict[str, Any]]]:
    """The headline ratio as the budget grows (more trials per method): one line per budget and method."""
    scan = {b: summarize(replay_all(args.methods, args.seeds, grid, b, args.every, sizes, losses))
            for b in args.budgets}
    print(f"replay: the ratio against the budget ({args.seeds} seeds each; median [p10, p90], seeds that reached "
          "(a)'s best, median trials per seed)")
    head = f"{'budget CPU-s':>12}  " + "  ".join(f"{names[m][:3]:<27}" for m in args.methods if m != "a")
    print(head)
    print("-" * len(head))
    for b, summary in scan.items():
        cells = []
        for m in args.methods:
            if m == "a":
                continue
            sm = summary[m]
            cells.append(f"{fmt(sm['ratio_p50'], '.2f'):>5} [{fmt(sm['ratio_p10'], '.2f')}, "
                         f"{fmt(sm['ratio_p90'], '.2f')}] {sm['reached']:>2} {sm['trials']:>3.0f}".ljust(27))
        print(f"{b:>12.0f}  " + "  ".join(cells))
    return scan


def replay_main(args: argparse.Namespace, curves: Path, real: Path, plot: Path, names: dict[str, str],
                goal: float) -> int:
    from bench.ttq_data import DataSizes

    sizes = DataSizes(train=args.train_pairs, dev=args.dev_pairs, test=args.test_pairs, every=args.every,
                      seed=args.seed).__dict__
    if not curves.exists():
        raise SystemExit(f"{curves} is missing: run --grid first")
    grid = load_grid(curves, sizes)
    sizes, losses = complete_space(grid)
    if not losses:
        raise SystemExit(f"the grid has {len(grid)} of 36 configurations for these data sizes, no loss's sub-grid "
                         "complete: run --grid again (it resumes)")
    grid = {k: v for k, v in grid.items() if k[3] in losses and k[1] in sizes}
    t = time.time()
    runs = replay_all(args.methods, args.seeds, grid, args.budget, args.every, sizes, losses)
    elapsed = time.time() - t
    best_cfg = max(grid.values(), key=lambda r: r.best)
    best_final = max(grid.values(), key=lambda r: r.final)
    print()
    print(f"replay against the grid ({len(grid)} configurations from {curves.name}: lr "
          f"{' / '.join(f'{x:g}' for x in GRID_LRS)} x batch {' / '.join(map(str, sizes))} x epochs 1 / 2 x "
          f"{' / '.join(losses)}; "
          f"best of the grid: dev "
          f"{best_final.final:.4f} at the end, {best_cfg.best:.4f} best state), budget {args.budget:.0f} CPU-s, "
          f"{args.seeds} seeds per method, {elapsed:.0f} s")
    head = (f"{'method':<54} {'ratio median [p10, p90]':>26} {'reached':>8} {'best dev median [p10, p90]':>28} "
            f"{'trials':>6} {'pruned':>6}")
    print("ratio: CPU-s to reach (a)'s final best of the same seed / (a)'s CPU-s to reach it")
    print(head)
    print("-" * len(head))
    summary = summarize(runs)
    for m, sm in summary.items():
        ratio_txt = f"{fmt(sm['ratio_p50'], '.2f')} [{fmt(sm['ratio_p10'], '.2f')}, {fmt(sm['ratio_p90'], '.2f')}]"
        best_txt = f"{sm['best_p50']:.4f} [{sm['best_p10']:.4f}, {sm['best_p90']:.4f}]"
        reached_txt = f"{sm['reached']}/{sm['n']}"
        print(f"{names[m]:<54} {ratio_txt:>26} {reached_txt:>8} {best_txt:>28} {sm['trials']:>6.0f} "
              f"{sm['pruned']:>6.0f}")
    st = {m: v for m, v in summary.items() if m in "cde"}
    if st:
        m, v = min(st.items(), key=lambda kv: kv[1]["ratio_p50"])
        print(f"headline (replay): best stsweep method {names[m]}: median ratio {fmt(v['ratio_p50'], '.2f')} "
              f"(goal <= {goal}) [{'met' if v['ratio_p50'] <= goal else 'MISSED'}]")
    print()
    for line in grid_bias(grid):
        print(line)
    print()
    for line in pruning_bias(runs, names):
        print(line)
    scan = None
    if args.budgets:
        print()
        scan = budget_scan(args, grid, sizes, losses, names)
    real_doc = json.loads(real.read_text()) if real.exists() else None
    try:
        from bench.ttq_plot import draw

        draw(plot, runs, real_doc, names, args.budget, scan)
        print(f"\nplot: {plot.relative_to(plot.parents[1])}")
    except ImportError as exc:
        print(f"\nno plot ({exc}): .venv/bin/pip install matplotlib (the `bench` extra)")
    return 0
