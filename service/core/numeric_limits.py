"""The bound of every number a client sends, and the consumer that sets it: one table, read by the request models
(core/spec.py, core/schemas.py), the upload options (store/datasets.py), the token store and the routes' query
and path parameters. README.md ("Limits") lists it.

A bound is the range every place the value flows to can hold, with room to spare for honest use: PostgreSQL
columns and functions (INTEGER, BIGINT, `make_interval` added to a timestamp), Optuna's own tables (an
intermediate value's `step` is a 32-bit INTEGER, and steps here are examples seen), Python's datetime (year
9999), numpy / torch seeds (32-bit unsigned), torch's float32 and the trainer's arguments.

Keys are dotted locations in a request body, `*` standing for any one key or index. Under `search_space`, a
parameter's bound covers its fixed value and its distribution's `low`, `high`, `step` and `choices`
(`bound_for` strips those). Keys of the other requests start with the request (`extend.`, `upload.`, `token.`,
`query.`, `path.`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

INT32_MAX = 2**31 - 1  # PostgreSQL INTEGER; Optuna's trials.number and trial_intermediate_values.step
INT64_MAX = 2**63 - 1  # PostgreSQL BIGINT
SEED_MAX = 2**32 - 1  # numpy.random.RandomState / torch.manual_seed / Optuna samplers: a 32-bit unsigned seed
MAX_TRIALS = 100_000  # a study's search budget, also once extended
MAX_BATCH_SIZE = 65_536
MAX_DURATION_SECONDS = 36_525 * 86_400  # 100 years: now() + it is year ~2126, far inside both datetime ranges
MAX_ROWS = 1_000_000_000  # a row count or index into a data set (datasets / Arrow index with int64)
MAX_COLUMN_POSITION = 1_000_000  # a 0-based column position (a Python list index)
MAX_SCORE = 1e9  # |score_range| bound: (score - low) / (high - low) stays exact enough in float32 labels
MAX_HYPERPARAMETER = 1e6  # the largest value any searched hyperparameter may take (max_grad_norm, loss params)


@dataclass(frozen=True)
class Bound:
    """A closed range [low, high] (open at an end where `low_open` / `high_open`) and who sets it."""

    low: float
    high: float
    consumer: str
    low_open: bool = False
    high_open: bool = False

    def field(self) -> dict[str, float]:
        """The keyword arguments of pydantic's Field for this range."""
        return {"gt" if self.low_open else "ge": self.low, "lt" if self.high_open else "le": self.high}

    def problem(self, value: float) -> str | None:
        """Why `value` is outside the range, or None."""
        if isinstance(value, float) and not math.isfinite(value):  # an int of any size compares exactly
            return "must be a finite number"
        if value < self.low or (self.low_open and value == self.low):
            return f"{value!r} is below the smallest allowed value ({self.shown()})"
        if value > self.high or (self.high_open and value == self.high):
            return f"{value!r} is above the largest allowed value ({self.shown()})"
        return None

    def shown(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{_num(self.low)}, {_num(self.high)}{right}"


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e16 else repr(value)


_SEED = Bound(0, SEED_MAX, "numpy / torch / Optuna seeds are 32-bit unsigned; trials.train_seed is BIGINT")
_STEP = "Optuna's trial_intermediate_values.step (INTEGER); steps count examples seen"

# Searched hyperparameters: each bounds the fixed value and low / high / step / choices of its distribution.
HYPERPARAMETER_BOUNDS: dict[str, Bound] = {
    "learning_rate": Bound(0, 10.0, "the optimizer's lr (torch float32)", low_open=True),
    "per_device_train_batch_size": Bound(1, MAX_BATCH_SIZE, "the DataLoader's batch; x every_n_steps it is an "
                                         "evaluation interval, an Optuna step (INTEGER)"),
    "num_train_epochs": Bound(0, 1000, "the trainer's num_train_epochs; x rows it is planned_examples (BIGINT)",
                              low_open=True),
    "warmup_ratio": Bound(0, 1.0, "transformers' warmup_steps, a ratio below 1"),
    "weight_decay": Bound(0, 10.0, "the optimizer's weight_decay (torch float32)"),
    "max_grad_norm": Bound(0, MAX_HYPERPARAMETER, "torch.nn.utils.clip_grad_norm_ (float32)", low_open=True),
    "max_seq_length": Bound(1, 8192, "the tokenizer's max_length (position embeddings)"),
    "gradient_accumulation_steps": Bound(1, 1024, "the trainer's gradient_accumulation_steps"),
}
LOSS_PARAM_BOUND = Bound(0, MAX_HYPERPARAMETER, "the loss's constructor (torch float32 scale / margin)",
                         low_open=True)
MINI_BATCH_BOUND = Bound(1, MAX_BATCH_SIZE, "CachedMultipleNegativesRankingLoss's mini_batch_size")

NUMERIC_LIMITS: dict[str, Bound] = {
    # ---------------------------------------------------------------- a study (POST /v1/studies)
    "budget.n_trials": Bound(1, MAX_TRIALS, "trials.number and Optuna's trials.number (INTEGER)"),
    "budget.max_concurrent_trials": Bound(1, 10_000, "studies.max_concurrent_trials (INTEGER)"),
    "budget.timeout_seconds": Bound(0, MAX_DURATION_SECONDS, "started_at + make_interval(secs => ...) in the "
                                    "claim query and the reaper (PostgreSQL timestamptz), Python datetime in the "
                                    "ETA", low_open=True),
    "max_attempts": Bound(1, 100, "trials.attempts (INTEGER)"),
    "keep_top_k": Bound(1, 10_000, "the checkpoints kept per study"),
    "seed": _SEED,
    "sampler.seed": _SEED,
    "sampler.n_startup_trials": Bound(0, MAX_TRIALS, "Optuna's sampler, counted against trials"),
    "pruner.n_startup_trials": Bound(0, MAX_TRIALS, "Optuna's pruner, counted against trials"),
    "pruner.n_warmup_steps": Bound(0, INT32_MAX, _STEP),
    "pruner.interval_steps": Bound(1, INT32_MAX, _STEP),
    "pruner.n_min_trials": Bound(1, MAX_TRIALS, "Optuna's pruner, counted against trials"),
    "pruner.percentile": Bound(0, 100, "Optuna's PercentilePruner (numpy.percentile)", low_open=True,
                               high_open=True),
    "pruner.min_resource": Bound(1, INT32_MAX, _STEP),
    "pruner.max_resource": Bound(1, INT32_MAX, _STEP),
    "pruner.reduction_factor": Bound(2, 100, "Optuna's successive halving / hyperband rungs (log base)"),
    "evaluation.every_n_examples": Bound(1, INT32_MAX, _STEP),
    "evaluation.every_n_steps": Bound(1, INT32_MAX // MAX_BATCH_SIZE, "x the batch size it is an evaluation "
                                      "interval in examples, an Optuna step (INTEGER)"),
    "evaluation.max_eval_samples": Bound(1, MAX_ROWS, "rows of the eval split (datasets.Dataset.select, int64)"),
    "evaluation.early_stopping_patience": Bound(1, 1_000_000, "evaluations without improvement"),
    "evaluation.early_stopping_threshold": Bound(0, MAX_HYPERPARAMETER, "compared with metric differences "
                                                 "(float64)"),
    "data.seed": _SEED,
    "data.split.seed": _SEED,
    "data.split.eval_fraction": Bound(0, 1, "a fraction of the rows", low_open=True, high_open=True),
    "data.split.test_fraction": Bound(0, 1, "a fraction of the rows", high_open=True),
    "data.max_train_samples": Bound(1, MAX_ROWS, "rows of the train split (datasets.Dataset.select, int64)"),
    "data.columns.*": Bound(0, MAX_COLUMN_POSITION, "a 0-based column position (a Python list index)"),
    "data.score_range.*": Bound(-MAX_SCORE, MAX_SCORE, "labels scaled by (score - low) / (high - low) into "
                                "torch float32"),
    "confirm.top_k": Bound(1, 20, "confirm trials, top_k x seeds of them (trials.number, INTEGER)"),
    "confirm.seeds": Bound(1, 20, "confirm trials, top_k x seeds of them (trials.number, INTEGER)"),
    # an enqueued value must also lie in its parameter's own range, checked against the distribution
    "enqueue_trials.*.*": Bound(0, MAX_HYPERPARAMETER, "the searched parameter's own range (search_space.*)"),
    **{f"search_space.{name}": bound for name, bound in HYPERPARAMETER_BOUNDS.items()},
    "search_space.loss_params.*.*": LOSS_PARAM_BOUND,
    "search_space.loss_params.*.mini_batch_size": MINI_BATCH_BOUND,
    # ---------------------------------------------------------------- the other requests
    "extend.n_trials": Bound(1, MAX_TRIALS, "trials.number (INTEGER); the study's total stays within "
                             "budget.n_trials's bound"),
    "upload.score_range.*": Bound(-MAX_SCORE, MAX_SCORE, "as data.score_range: float32 labels"),
    "upload.columns.*": Bound(0, MAX_COLUMN_POSITION, "a 0-based column position (a Python list index)"),
    "token.expires_in_seconds": Bound(0, MAX_DURATION_SECONDS, "now() + make_interval(secs => ...) in "
                                      "api_tokens.expires_at (timestamptz), Python datetime when listed",
                                      low_open=True),
    "project.share": Bound(0, 1_000_000, "projects.share (double precision): a weight, claims in proportion",
                           low_open=True),
    "project.max_active_studies": Bound(0, INT32_MAX, "projects.max_active_studies (INTEGER)"),
    "project.max_trials": Bound(0, INT64_MAX, "projects.max_trials (BIGINT): queued plus running trials"),
    "project.max_stored_bytes": Bound(0, INT64_MAX, "projects.max_stored_bytes (BIGINT)"),
    "query.offset": Bound(0, 10_000_000, "SQL OFFSET (BIGINT); pages past it are refused, not scanned"),
    "query.limit": Bound(1, 500, "SQL LIMIT: one page"),
    "query.cursor": Bound(0, INT64_MAX, "the change sequence (BIGINT)"),
    "path.number": Bound(0, INT32_MAX, "trials.number (INTEGER)"),
}

# Parameters that take names only (core/spec.py's names_of): their schema admits a number, and every number
# there is refused (a 422 naming the field), so no consumer ever sees one.
NAMES_ONLY: dict[str, str] = {
    "search_space.lr_scheduler_type": "transformers' scheduler, by name",
    "search_space.optim": "transformers' optimizer, by name",
    "search_space.loss": "the task's loss, by name",
}

# A parameter's distribution fields that its own bound covers.
_DISTRIBUTION_PARTS = ("low", "high", "step")


def names_only(location: tuple[str | int, ...] | str) -> bool:
    """Whether a location lies in a parameter that takes names only (no number is ever accepted there)."""
    parts = [str(p) for p in (location.split(".") if isinstance(location, str) else location)]
    return ".".join(parts[:2]) in NAMES_ONLY


def bound_for(location: tuple[str | int, ...] | str) -> Bound | None:
    """The bound of a numeric field at a location (a tuple, or a dotted string), or None when the table has
    none. Under `search_space`, a distribution's low / high / step / choices.N take their parameter's bound."""
    parts = [str(p) for p in (location.split(".") if isinstance(location, str) else location)]
    if parts and parts[0] == "search_space":
        if len(parts) >= 2 and parts[-2] == "choices":
            parts = parts[:-2]
        elif parts[-1] in _DISTRIBUTION_PARTS and len(parts) > 2:
            parts = parts[:-1]
    best: tuple[int, Bound] | None = None
    for key, bound in NUMERIC_LIMITS.items():
        pattern = key.split(".")
        if len(pattern) == len(parts) and all(p in ("*", q) for p, q in zip(pattern, parts)):
            exact = sum(p != "*" for p in pattern)  # the most specific key wins (mini_batch_size over *)
            if best is None or exact > best[0]:
                best = (exact, bound)
    return None if best is None else best[1]


def limit(key: str) -> Bound:
    """The table's bound for `key` (a KeyError names a missing entry at import time)."""
    return NUMERIC_LIMITS[key]


def field(key: str) -> dict[str, Any]:
    """pydantic Field keyword arguments for the table's bound of `key`."""
    return dict(NUMERIC_LIMITS[key].field())
