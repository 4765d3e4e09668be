"""The study definition: what a client posts (JSON) or writes (YAML), validated before anything is stored.

Every error names its field (pydantic's `loc`), so a 422 says e.g. `search_space.learning_rate.low`.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from service.core.tasks import TASKS, TaskKind

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- distributions


class FloatDistribution(_Strict):
    distribution: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatDistribution:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled distribution needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log")
        return self


class IntDistribution(_Strict):
    distribution: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntDistribution:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled distribution needs low > 0")
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log")
        return self


Scalar = Union[bool, int, float, str]


class CategoricalDistribution(_Strict):
    distribution: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        if len({repr(c) for c in choices}) != len(choices):
            raise ValueError("choices must be distinct")
        return choices


Distribution = Annotated[
    Union[FloatDistribution, IntDistribution, CategoricalDistribution], Field(discriminator="distribution")
]


def _param_kind(value: Any) -> str:
    return "distribution" if isinstance(value, (dict, BaseModel)) else "value"


# A parameter is a distribution (an object with "distribution") or a fixed scalar; the callable discriminator
# keeps pydantic from reporting every branch of the union when one is wrong.
Param = Annotated[
    Union[Annotated[Distribution, Tag("distribution")], Annotated[Scalar, Tag("value")]],
    Discriminator(_param_kind),
]


def candidate_values(param: Param) -> list[Any] | None:
    """Every value a parameter can take when that is a finite list (fixed, categorical, stepped int)."""
    if isinstance(param, CategoricalDistribution):
        return list(param.choices)
    if isinstance(param, IntDistribution) and not param.log:
        return list(range(param.low, param.high + 1, param.step))
    if isinstance(param, FloatDistribution):
        return None
    if isinstance(param, IntDistribution):
        return None
    return [param]


def bounds(param: Param) -> tuple[float, float] | None:
    """(min, max) of a numeric parameter, or None for categorical strings."""
    if isinstance(param, (FloatDistribution, IntDistribution)):
        return float(param.low), float(param.high)
    values = candidate_values(param) or []
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values):
        return None
    return float(min(numbers)), float(max(numbers))


# ---------------------------------------------------------------- search space

LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")

# name -> (default, lowest allowed, highest allowed, kind); kind "int" accepts ints only.
HYPERPARAMETERS: dict[str, tuple[Any, float | None, float | None, str]] = {
    "learning_rate": (2e-5, 0.0, 10.0, "positive"),
    "per_device_train_batch_size": (16, 1, 65536, "int"),
    "num_train_epochs": (1, 0.0, 1000, "positive"),
    "warmup_ratio": (0.1, 0.0, 1.0, "float"),
    "weight_decay": (0.0, 0.0, 10.0, "float"),
    "max_grad_norm": (1.0, 0.0, 1e6, "positive"),
    "max_seq_length": (None, 1, 8192, "int"),
    "gradient_accumulation_steps": (1, 1, 1024, "int"),
}
CATEGORICAL_HYPERPARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lr_scheduler_type": ("linear", LR_SCHEDULERS),
    "optim": ("adamw_torch", OPTIMIZERS),
}


class SearchSpace(BaseModel):
    """Each hyperparameter is a fixed value or a distribution. `loss_params` holds per-loss parameters,
    sampled only in trials that picked that loss: {"CoSENTLoss": {"scale": {...}}}."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: Param = 2e-5
    per_device_train_batch_size: Param = 16
    num_train_epochs: Param = 1
    warmup_ratio: Param = 0.1
    weight_decay: Param = 0.0
    max_grad_norm: Param = 1.0
    max_seq_length: Param | None = None
    gradient_accumulation_steps: Param = 1
    lr_scheduler_type: Param = "linear"
    optim: Param = "adamw_torch"
    loss: Param | None = None
    loss_params: dict[str, dict[str, Param]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_ranges(self) -> SearchSpace:
        for name, (_default, low, high, kind) in HYPERPARAMETERS.items():
            param = getattr(self, name)
            if param is None:
                continue
            _check_numeric(name, param, low, high, kind)
        for name, (_default, allowed) in CATEGORICAL_HYPERPARAMETERS.items():
            values = candidate_values(getattr(self, name))
            if values is None or any(v not in allowed for v in values):
                raise ValueError(f"{name}: each value must be one of {', '.join(allowed)}")
        return self

    def params(self) -> dict[str, Param]:
        """The hyperparameters by name, loss included (may be None until the task fills it)."""
        names = [*HYPERPARAMETERS, *CATEGORICAL_HYPERPARAMETERS, "loss"]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def _check_numeric(name: str, param: Param, low: float | None, high: float | None, kind: str) -> None:
    if isinstance(param, CategoricalDistribution):
        values: list[Any] = list(param.choices)
    elif isinstance(param, (FloatDistribution, IntDistribution)):
        if kind == "int" and isinstance(param, FloatDistribution):
            raise ValueError(f"{name}: must be an int distribution, not float")
        values = [param.low, param.high]
    else:
        values = [param]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name}: {v!r} is not a number")
        if kind == "int" and not float(v).is_integer():
            raise ValueError(f"{name}: {v!r} is not a whole number")
        if kind == "positive" and v <= 0:
            raise ValueError(f"{name}: {v!r} must be > 0")
        if low is not None and v < low:
            raise ValueError(f"{name}: {v!r} is below the smallest allowed value {low}")
        if high is not None and v > high:
            raise ValueError(f"{name}: {v!r} is above the largest allowed value {high}")


# ---------------------------------------------------------------- data


class DataRef(_Strict):
    """One data set: a file under STSWEEP_DATA_ROOT (`path`), an uploaded dataset (`dataset_id`), or a
    Hugging Face dataset (`hf`, with `split` and optional `config`).

    `header: false`: a CSV / TSV file without a header row (the STS benchmark's own files); `data.columns`
    then gives every role's 0-based position, e.g. {sentence1: 5, sentence2: 6, score: 4}."""

    path: str | None = None
    dataset_id: str | None = None
    hf: str | None = None
    config: str | None = None
    split: str | None = None
    header: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> DataRef:
        given = [k for k in ("path", "dataset_id", "hf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of path, dataset_id or hf")
        if self.path is not None:
            p = PurePosixPath(self.path.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError("path: must be relative to STSWEEP_DATA_ROOT and may not contain '..'")
            if p.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json", ".parquet"):
                raise ValueError("path: must end in .csv, .tsv, .jsonl or .parquet")
            if not self.header and p.suffix.lower() not in (".csv", ".tsv"):
                raise ValueError("header: only .csv and .tsv files can be read without a header (the others "
                                 "name their columns)")
        if self.hf is not None and not self.header:
            raise ValueError("header: an hf dataset names its columns; header: false is for CSV / TSV files "
                             "(path or dataset_id)")
        if self.hf is not None and not self.split:
            raise ValueError("split: an hf dataset needs a split")
        if self.split is not None and self.hf is None:
            raise ValueError("split: only goes with hf")
        return self


class SplitSpec(_Strict):
    """Split one source into train / eval / test with a seed."""

    source: DataRef
    eval_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_train(self) -> SplitSpec:
        if self.eval_fraction + self.test_fraction >= 1:
            raise ValueError("eval_fraction + test_fraction must leave rows for training")
        return self


class DataSpec(_Strict):
    train: DataRef | None = None
    eval: DataRef | None = None
    test: DataRef | None = None
    split: SplitSpec | None = None
    # role -> column name; with headerless files (header: false) role -> 0-based position
    columns: dict[str, Union[StrictStr, Annotated[StrictInt, Field(ge=0)]]] = Field(default_factory=dict)
    score_range: tuple[float, float] = (0.0, 1.0)
    max_train_samples: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _sources(self) -> DataSpec:
        if self.split is not None:
            if self.train or self.eval or self.test:
                raise ValueError("give either split or train/eval/test, not both")
        elif self.train is None or self.eval is None:
            raise ValueError("train and eval are required (or a split)")
        low, high = self.score_range
        if not low < high:
            raise ValueError("score_range must be [low, high] with low < high")
        self._check_columns()
        return self

    def headerless(self) -> bool:
        """Whether the files have no header row (then data.columns holds positions)."""
        return any(not ref.header for ref in self.refs().values())

    def _check_columns(self) -> None:
        refs = self.refs()
        without = [role for role, ref in refs.items() if not ref.header]
        if without and len(without) != len(refs):
            with_header = next(role for role, ref in refs.items() if ref.header)
            raise ValueError(f"{without[0]}.header: data.columns is shared by every file, so all of them have a "
                             f"header or none does ({with_header} has one)")
        for role, column in self.columns.items():
            if without and isinstance(column, str):
                raise ValueError(f"columns: {role}: {column!r} is a name, but the files have no header "
                                 f"(header: false); give the 0-based position")
            if not without and not isinstance(column, str):
                raise ValueError(f"columns: {role}: {column} is a position, but positions are only for files "
                                 f"without a header (header: false on the file); give the column name")

    def refs(self) -> dict[str, DataRef]:
        """Every referenced data set by role (train/eval/test, or split.source)."""
        if self.split is not None:
            return {"split.source": self.split.source}
        return {k: v for k, v in (("train", self.train), ("eval", self.eval), ("test", self.test)) if v}


# ---------------------------------------------------------------- the rest


class Objective(_Strict):
    metric: str | None = None
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(_Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"] = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = Field(default=None, ge=0)
    multivariate: bool = True
    constant_liar: bool = True


class PrunerSpec(_Strict):
    """Steps are examples seen: n_warmup_steps, interval_steps, min_resource and max_resource count examples."""

    name: Literal["none", "median", "percentile", "successive_halving", "hyperband"] = "median"
    n_startup_trials: int = Field(default=2, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)
    n_min_trials: int = Field(default=1, ge=1)
    percentile: float = Field(default=50.0, gt=0, lt=100)
    min_resource: int | Literal["auto"] = "auto"
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)

    @field_validator("min_resource", "max_resource")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class EvaluationSpec(_Strict):
    every_n_examples: int | None = Field(default=None, gt=0)
    every_n_steps: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=500, gt=0)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    early_stopping_threshold: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_interval(self) -> EvaluationSpec:
        if self.every_n_examples is not None and self.every_n_steps is not None:
            raise ValueError("give every_n_examples or every_n_steps, not both")
        return self


class BudgetSpec(_Strict):
    n_trials: int = Field(default=10, ge=1, le=100_000)
    max_concurrent_trials: int = Field(default=4, ge=1, le=10_000)
    timeout_seconds: float | None = Field(default=None, gt=0)


class StudySpec(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\- ]*$")
    base_model: str = Field(default=DEFAULT_BASE_MODEL, min_length=1, max_length=500)
    task: TaskKind
    data: DataSpec
    objective: Objective = Field(default_factory=Objective)
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    max_attempts: int = Field(default=3, ge=1, le=100)
    keep_top_k: int = Field(default=3, ge=1, le=10_000)
    seed: int = 42
    description: str | None = Field(default=None, max_length=10_000)
    # Configurations to try first (Optuna's enqueue_trial), e.g. a known-good baseline recipe.
    enqueue_trials: list[dict[str, Scalar]] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _fit_task(self) -> StudySpec:
        task = TASKS[self.task]
        # Columns: every role the task needs maps to a column name (identity by default).
        unknown = sorted(set(self.data.columns) - set(task.columns))
        if unknown:
            raise ValueError(f"data.columns: {unknown[0]!r} is not a column of task {self.task} "
                             f"(expected {', '.join(task.columns)})")
        if self.data.headerless():  # positions: there are no names to default to
            missing = [role for role in task.columns if role not in self.data.columns]
            if missing:
                raise ValueError(f"data.columns: files without a header need the 0-based position of every "
                                 f"column of task {self.task}; missing {', '.join(missing)}")
        self.data.columns = {role: self.data.columns.get(role, role) for role in task.columns}
        # Loss: default to the task's first; every candidate must fit the task.
        if self.search_space.loss is None:
            self.search_space.loss = task.losses[0].name
        losses = candidate_values(self.search_space.loss)
        if losses is None:
            raise ValueError("search_space.loss must be a loss name or a categorical choice of names")
        for name in losses:
            if task.loss(str(name)) is None:
                raise ValueError(f"search_space.loss: {name!r} does not fit task {self.task} "
                                 f"(choose from {', '.join(task.loss_names)})")
        for loss_name, params in self.search_space.loss_params.items():
            info = task.loss(loss_name)
            if info is None or loss_name not in losses:
                raise ValueError(f"search_space.loss_params: {loss_name!r} is not one of the study's losses")
            for pname, param in params.items():
                if pname not in info.params:
                    allowed = ", ".join(info.params) or "none"
                    raise ValueError(f"search_space.loss_params.{loss_name}: unknown parameter {pname!r} "
                                     f"(tunable: {allowed})")
                _check_numeric(f"search_space.loss_params.{loss_name}.{pname}", param, 0.0, 1e6,
                               "int" if pname == "mini_batch_size" else "positive")
        # Objective: a metric the task's evaluator reports.
        if self.objective.metric is None:
            self.objective.metric = task.primary_metric
        if self.objective.metric not in task.metrics:
            raise ValueError(f"objective.metric: {self.objective.metric!r} is not reported for task "
                             f"{self.task} (choose from {', '.join(task.metrics)})")
        if self.sampler.name == "grid":
            self.grid()  # raises when a parameter has no finite set of values
        self._check_enqueued()
        return self

    def _check_enqueued(self) -> None:
        searched = (FloatDistribution, IntDistribution, CategoricalDistribution)
        names = {n for n, p in self.search_space.params().items() if isinstance(p, searched)}
        for loss_name, params in self.search_space.loss_params.items():
            names |= {f"{loss_name}.{n}" for n, p in params.items() if isinstance(p, searched)}
        for i, trial in enumerate(self.enqueue_trials):
            for name in trial:
                if name not in names:
                    raise ValueError(f"enqueue_trials.{i}: {name!r} is not a searched hyperparameter "
                                     f"(searched: {', '.join(sorted(names)) or 'none'})")

    # -------------------------------------------------------------- derived

    def smallest_batch_size(self) -> int:
        values = candidate_values(self.search_space.per_device_train_batch_size)
        if values is None:
            b = bounds(self.search_space.per_device_train_batch_size)
            assert b is not None
            return int(b[0])
        return int(min(values))

    def eval_every_examples(self) -> int:
        """Examples between evaluations: fixed for the whole study so every trial reports at the same steps."""
        ev = self.evaluation
        if ev.every_n_examples is not None:
            return ev.every_n_examples
        if ev.every_n_steps is not None:
            return ev.every_n_steps * self.smallest_batch_size()
        return 1000

    def grid(self) -> dict[str, list[Any]]:
        """The grid for the grid sampler: every searched parameter must have a finite set of values."""
        grid: dict[str, list[Any]] = {}
        for name, param in self.search_space.params().items():
            if isinstance(param, (FloatDistribution, IntDistribution, CategoricalDistribution)):
                values = candidate_values(param)
                if values is None:
                    raise ValueError(f"search_space.{name}: the grid sampler needs choices or an int range")
                grid[name] = values
        for loss_name, params in self.search_space.loss_params.items():
            for pname, param in params.items():
                if isinstance(param, (FloatDistribution, IntDistribution, CategoricalDistribution)):
                    raise ValueError(f"search_space.loss_params.{loss_name}.{pname}: the grid sampler "
                                     "cannot search loss parameters; fix them")
        return grid


# ---------------------------------------------------------------- error messages

# Tags pydantic puts in an error's location for tagged unions; they are not fields.
_UNION_TAGS = {"distribution", "value", "float", "int", "categorical", "bool", "str"}


def field_errors(error: Any) -> list[dict[str, str]]:
    """A pydantic ValidationError as [{"field": "search_space.learning_rate.low", "message": ...}].

    Validators on a parent object name the child in their message ("learning_rate: must be > 0"); that prefix is
    moved into the field so every error names the exact input at fault. Used by the API and the CLI alike.
    """
    out: list[dict[str, str]] = []
    for e in error.errors():
        parts = [str(p) for p in e.get("loc", ()) if "[" not in str(p) and str(p) not in _UNION_TAGS]
        message = str(e.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        head, sep, rest = message.partition(": ")
        if sep and head and " " not in head and all(c.isalnum() or c in "._@" for c in head):
            head_parts = head.split(".")
            if parts and head_parts[0] == parts[0]:
                head_parts = head_parts[1:]
            parts = parts + [p for p in head_parts if p]
            message = rest
        out.append({"field": ".".join(parts) or "body", "message": message})
    return out
