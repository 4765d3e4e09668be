"""The study definition: what a client posts (JSON) or writes (YAML), validated before anything is stored.

Every error names its field (pydantic's `loc`), so a 422 says e.g. `search_space.learning_rate.low`. The
limits (lengths, seeds, depth, grid size, hub ids) are core/body_limits.py's; this module applies them to every
value.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.core.access import PROJECT_PATTERN
from service.core import body_limits, numeric_limits
from service.core.numeric_limits import field as bounded
from service.core.errors import InvalidInput
from service.core.tasks import TASKS, TaskKind

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Every seed (sampler, training, data split, train subset) is a 32-bit unsigned integer.
Seed = Annotated[int, Field(**bounded("seed"))]


def _refuse(problems: list[body_limits.Problem], title: str = "StudySpec") -> ValidationError:
    """Problems as a pydantic ValidationError with their exact locations (pydantic prefixes the enclosing
    fields when raised inside a nested model's validator)."""
    return ValidationError.from_exception_data(title, [
        {"type": PydanticCustomError("invalid_value", "{reason}", {"reason": p.message}), "loc": p.location,
         "input": None}
        for p in problems
    ])


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
    choices: list[Scalar] = Field(min_length=1, max_length=body_limits.MAX_CHOICES)

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
    """Every value a parameter can take when that is a finite list (fixed, categorical, stepped int).
    Builds the list: call it only once the count is known to be small (value_count, grid checks)."""
    if isinstance(param, CategoricalDistribution):
        return list(param.choices)
    if isinstance(param, IntDistribution) and not param.log:
        return list(range(param.low, param.high + 1, param.step))
    if isinstance(param, FloatDistribution):
        return None
    if isinstance(param, IntDistribution):
        return None
    return [param]


def value_count(param: Param) -> int | None:
    """How many values candidate_values would list, computed without listing them (None: not finite)."""
    if isinstance(param, CategoricalDistribution):
        return len(param.choices)
    if isinstance(param, IntDistribution):
        return None if param.log else (param.high - param.low) // param.step + 1
    if isinstance(param, FloatDistribution):
        return None
    return 1


def names_of(field: str, param: Param) -> list[Any]:
    """The values of a parameter that takes one of a fixed set of names (scheduler, optimizer, loss): a fixed
    value or a categorical distribution. A numeric range is refused before any list is built."""
    if isinstance(param, (FloatDistribution, IntDistribution)):
        raise ValueError(f"{field}: takes one of a fixed set of names; give a name or a categorical distribution "
                         f"of names, not a range ({param.distribution} distribution)")
    values = candidate_values(param)
    assert values is not None
    return values


def enqueued_problem(param: Param, value: Any) -> str | None:
    """Why an enqueued value is not one the parameter's distribution can take, or None."""
    if isinstance(param, CategoricalDistribution):
        if any(_same_choice(value, choice) for choice in param.choices):
            return None
        shown = ", ".join(repr(c) for c in param.choices[:10]) + (", ..." if len(param.choices) > 10 else "")
        return f"{value!r} is not among the choices ({shown})"
    if not isinstance(param, (FloatDistribution, IntDistribution)):
        return "is not searched"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number ({param.distribution} distribution)"
    if isinstance(param, IntDistribution) and not isinstance(value, int):
        return f"{value!r} is not a whole number (int distribution)"
    if not param.low <= value <= param.high:
        return f"{value!r} is outside the range [{param.low}, {param.high}]"
    step = param.step
    if isinstance(param, IntDistribution) and (value - param.low) % param.step:
        return f"{value!r} is not on the grid {param.low} + k * {step}"
    if isinstance(param, FloatDistribution) and step is not None:
        k = (value - param.low) / step
        if abs(k - round(k)) > 1e-8:
            return f"{value!r} is not on the grid {param.low} + k * {step}"
    return None


def _same_choice(value: Any, choice: Any) -> bool:
    """Equal and of the same kind: True is not 1, and "1" is not 1 (Optuna would confuse them)."""
    if isinstance(value, bool) or isinstance(choice, bool):
        return isinstance(value, bool) and isinstance(choice, bool) and value == choice
    if isinstance(value, str) or isinstance(choice, str):
        return isinstance(value, str) and isinstance(choice, str) and value == choice
    return bool(value == choice)


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

# name -> (default, whole numbers only); the bounds are core/numeric_limits.py's HYPERPARAMETER_BOUNDS.
HYPERPARAMETERS: dict[str, tuple[Any, bool]] = {
    "learning_rate": (2e-5, False),
    "per_device_train_batch_size": (16, True),
    "num_train_epochs": (1, False),
    "warmup_ratio": (0.1, False),
    "weight_decay": (0.0, False),
    "max_grad_norm": (1.0, False),
    "max_seq_length": (None, True),
    "gradient_accumulation_steps": (1, True),
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
        for name, (_default, whole) in HYPERPARAMETERS.items():
            param = getattr(self, name)
            if param is None:
                continue
            _check_numeric(name, param, numeric_limits.HYPERPARAMETER_BOUNDS[name], whole)
        for name, (_default, allowed) in CATEGORICAL_HYPERPARAMETERS.items():
            values = names_of(name, getattr(self, name))
            if any(not isinstance(v, str) or v not in allowed for v in values):
                raise ValueError(f"{name}: each value must be one of {', '.join(allowed)}")
        return self

    def params(self) -> dict[str, Param]:
        """The hyperparameters by name, loss included (may be None until the task fills it)."""
        names = [*HYPERPARAMETERS, *CATEGORICAL_HYPERPARAMETERS, "loss"]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def _check_numeric(name: str, param: Param, bound: numeric_limits.Bound, whole: bool) -> None:
    """Every number a parameter can hold (fixed value, low / high / step, choices) inside its bound; the error
    names the exact input ("learning_rate.high: ...")."""
    if isinstance(param, CategoricalDistribution):
        values: list[tuple[str, Any]] = [(f"{name}.choices.{i}", c) for i, c in enumerate(param.choices)]
    elif isinstance(param, (FloatDistribution, IntDistribution)):
        if whole and isinstance(param, FloatDistribution):
            raise ValueError(f"{name}: must be an int distribution, not float")
        values = [(f"{name}.low", param.low), (f"{name}.high", param.high)]
        if param.step is not None:
            values.append((f"{name}.step", param.step))
    else:
        values = [(name, param)]
    for where, v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{where}: {v!r} is not a number")
        if whole and not float(v).is_integer():
            raise ValueError(f"{where}: {v!r} is not a whole number")
        problem = bound.problem(v)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")


# ---------------------------------------------------------------- data


class DataRef(_Strict):
    """One data set: a file in the project's folder under STSWEEP_DATA_ROOT (`path`), an uploaded dataset
    (`dataset_id`), or a Hugging Face dataset (`hf`, with `split` and optional `config`).

    `header: false`: a CSV / TSV file without a header row (the STS benchmark's own files); `data.columns`
    then gives every role's 0-based position, e.g. {sentence1: 5, sentence2: 6, score: 4}."""

    path: str | None = None
    dataset_id: str | None = None
    hf: str | None = None
    config: str | None = None
    split: str | None = None
    header: bool = True

    @field_validator("hf")
    @classmethod
    def _hub_id(cls, hf: str | None) -> str | None:
        problem = None if hf is None else body_limits.hub_id_problem(hf)
        if problem is not None:
            raise ValueError(problem)
        return hf

    @field_validator("split", "config")
    @classmethod
    def _hub_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = None if value is None else body_limits.hub_name_problem(value, str(info.field_name))
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataRef:
        given = [k for k in ("path", "dataset_id", "hf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of path, dataset_id or hf")
        if self.path is not None:
            p = PurePosixPath(self.path.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ValueError("path: must be relative to the project's data folder under STSWEEP_DATA_ROOT and "
                                 "may not contain '..'")
            if any(len(part.encode("utf-8", "surrogatepass")) > body_limits.MAX_PATH_PART_BYTES for part in p.parts):
                raise ValueError(f"path: each folder or file name in it is at most {body_limits.MAX_PATH_PART_BYTES} "
                                 "bytes (UTF-8)")
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
    eval_fraction: float = Field(default=0.1, **bounded("data.split.eval_fraction"))
    test_fraction: float = Field(default=0.0, **bounded("data.split.test_fraction"))
    seed: Seed = 0

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
    columns: dict[str, Union[StrictStr, Annotated[StrictInt, Field(**bounded("data.columns.*"))]]] = Field(
        default_factory=dict)
    score_range: tuple[Annotated[float, Field(**bounded("data.score_range.*"))],
                       Annotated[float, Field(**bounded("data.score_range.*"))]] = (0.0, 1.0)
    max_train_samples: int | None = Field(default=None, **bounded("data.max_train_samples"))
    seed: Seed = 0  # seeds the train subset

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
    seed: Seed | None = None
    n_startup_trials: int | None = Field(default=None, **bounded("sampler.n_startup_trials"))
    multivariate: bool = True
    constant_liar: bool = True


class PrunerSpec(_Strict):
    """Steps are examples seen: n_warmup_steps, interval_steps, min_resource and max_resource count examples.

    `compare_at` (median and percentile only): "examples" (the default) compares trials at equal examples seen;
    "schedule_fraction" compares a trial that has seen e of its planned P examples with the other trials' values
    at the same fraction e / P of their own planned schedules (service/store/fraction_pruner.py), so a longer
    schedule, behind at equal examples by construction (higher learning rate, later warmup and decay), is not
    pruned for that alone."""

    name: Literal["none", "median", "percentile", "successive_halving", "hyperband"] = "median"
    compare_at: Literal["examples", "schedule_fraction"] = "examples"
    n_startup_trials: int = Field(default=2, **bounded("pruner.n_startup_trials"))
    n_warmup_steps: int = Field(default=0, **bounded("pruner.n_warmup_steps"))
    interval_steps: int = Field(default=1, **bounded("pruner.interval_steps"))
    n_min_trials: int = Field(default=1, **bounded("pruner.n_min_trials"))
    percentile: float = Field(default=50.0, **bounded("pruner.percentile"))
    min_resource: Annotated[int, Field(**bounded("pruner.min_resource"))] | Literal["auto"] = "auto"
    max_resource: Annotated[int, Field(**bounded("pruner.max_resource"))] | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, **bounded("pruner.reduction_factor"))

    @model_validator(mode="after")
    def _compare_at_fits(self) -> PrunerSpec:
        if self.compare_at != "examples" and self.name not in ("median", "percentile"):
            raise ValueError(f"compare_at: {self.compare_at!r} works with the median and percentile pruners only "
                             f"(pruner {self.name!r} compares at examples seen)")
        return self


class EvaluationSpec(_Strict):
    every_n_examples: int | None = Field(default=None, **bounded("evaluation.every_n_examples"))
    every_n_steps: int | None = Field(default=None, **bounded("evaluation.every_n_steps"))
    max_eval_samples: int | None = Field(default=500, **bounded("evaluation.max_eval_samples"))
    early_stopping_patience: int | None = Field(default=None, **bounded("evaluation.early_stopping_patience"))
    early_stopping_threshold: float = Field(default=0.0, **bounded("evaluation.early_stopping_threshold"))

    @model_validator(mode="after")
    def _one_interval(self) -> EvaluationSpec:
        if self.every_n_examples is not None and self.every_n_steps is not None:
            raise ValueError("give every_n_examples or every_n_steps, not both")
        return self


MAX_TRIALS = numeric_limits.MAX_TRIALS  # a study's search budget, also once extended


class BudgetSpec(_Strict):
    n_trials: int = Field(default=10, **bounded("budget.n_trials"))
    max_concurrent_trials: int = Field(default=4, **bounded("budget.max_concurrent_trials"))
    timeout_seconds: float | None = Field(default=None, **bounded("budget.timeout_seconds"))


class ConfirmSpec(_Strict):
    """Once the search budget is spent, the `top_k` best distinct configurations are trained again with `seeds`
    more training seeds each (trials of kind `confirm`): the winner is then the configuration with the best
    mean, not the luckiest seed."""

    top_k: int = Field(default=3, **bounded("confirm.top_k"))
    seeds: int = Field(default=2, **bounded("confirm.seeds"))


STUDY_ID_PATTERN = r"^st_[0-9a-f]{16}$"
# How many of an old study's best configurations `warm_start_from` enqueues (at most; confirm.top_k if larger).
WARM_START_CONFIGS = 5


class StudySpec(_Strict):
    name: str = Field(min_length=1, max_length=body_limits.MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\- ]*$")
    base_model: str = Field(default=DEFAULT_BASE_MODEL, min_length=1, max_length=body_limits.MAX_BASE_MODEL_LENGTH)
    task: TaskKind
    data: DataSpec
    objective: Objective = Field(default_factory=Objective)
    search_space: SearchSpace = Field(default_factory=SearchSpace)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    max_attempts: int = Field(default=3, **bounded("max_attempts"))
    keep_top_k: int = Field(default=3, **bounded("keep_top_k"))
    seed: Seed = 42  # the training seed
    description: str | None = Field(default=None, max_length=body_limits.MAX_DESCRIPTION_LENGTH)
    # Configurations to try first (Optuna's enqueue_trial), e.g. a known-good baseline recipe.
    enqueue_trials: list[dict[str, Scalar]] = Field(default_factory=list, max_length=1000)
    # Confirm runs of the best configurations once the search budget is spent (None: off).
    confirm: ConfirmSpec | None = None
    # An earlier study whose best configurations are enqueued first (prepended to enqueue_trials when stored).
    warm_start_from: str | None = Field(default=None, pattern=STUDY_ID_PATTERN)
    # The project the study belongs to (None: the token's own; only an admin names another).
    project: str | None = Field(default=None, pattern=PROJECT_PATTERN, max_length=63)
    # What trials train in: `auto` (bf16 on GPUs that have it, fp16 on older ones; on the CPU float32, or bf16
    # autocast on CPUs with native bf16 units once workers/devices.py CPU_AUTO_BF16 says so), `fp32`, or `bf16`
    # (autocast; weights, the kept best state and checkpoints stay float32). What ran is recorded per trial.
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @field_validator("base_model")
    @classmethod
    def _model_ref(cls, base_model: str) -> str:
        problem = body_limits.model_ref_problem(base_model)
        if problem is not None:
            raise ValueError(problem)
        return base_model

    @model_validator(mode="before")
    @classmethod
    def _check_values(cls, data: Any) -> Any:
        """Before any field is built: every string, key and number of the body, wherever it is (body_limits.py)."""
        problems = body_limits.value_problems(data)
        if problems:
            raise _refuse(problems)
        return data

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
        losses = names_of("search_space.loss", self.search_space.loss)
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
                where = f"search_space.loss_params.{loss_name}.{pname}"
                bound = numeric_limits.bound_for(where)
                assert bound is not None  # the table covers every loss parameter
                _check_numeric(where, param, bound, pname == "mini_batch_size")
        # Objective: a metric the task's evaluator reports.
        if self.objective.metric is None:
            self.objective.metric = task.primary_metric
        if self.objective.metric not in task.metrics:
            raise ValueError(f"objective.metric: {self.objective.metric!r} is not reported for task "
                             f"{self.task} (choose from {', '.join(task.metrics)})")
        if self.sampler.name == "grid":  # counted, not built: raises when a parameter has no finite set of values
            problem = body_limits.grid_size_problem(self.grid_counts(), body_limits.MAX_GRID_SIZE_CEILING,
                                               "the largest STSWEEP_MAX_GRID_SIZE allowed")
            if problem is not None:
                raise ValueError(f"search_space: {problem}")
        self._check_enqueued()
        return self

    def searched(self) -> dict[str, Param]:
        """The searched parameters by the name Optuna knows them by (loss parameters as "<Loss>.<param>")."""
        kinds = (FloatDistribution, IntDistribution, CategoricalDistribution)
        found = {n: p for n, p in self.search_space.params().items() if isinstance(p, kinds)}
        for loss_name, params in self.search_space.loss_params.items():
            found |= {f"{loss_name}.{n}": p for n, p in params.items() if isinstance(p, kinds)}
        return found

    def _check_enqueued(self) -> None:
        searched = self.searched()
        problems: list[body_limits.Problem] = []
        for i, trial in enumerate(self.enqueue_trials):
            for name, value in trial.items():
                param = searched.get(name)
                if param is None:
                    problem: str | None = (f"{name!r} is not a searched hyperparameter (searched: "
                                           f"{', '.join(sorted(searched)) or 'none'})")
                else:
                    problem = enqueued_problem(param, value)
                if problem is not None:
                    problems.append(body_limits.Problem(("enqueue_trials", i, name), problem))
        if problems:
            raise _refuse(problems[:20])

    # -------------------------------------------------------------- derived

    def smallest_batch_size(self) -> int:
        param = self.search_space.per_device_train_batch_size
        if isinstance(param, (FloatDistribution, IntDistribution)):
            return int(param.low)
        if isinstance(param, CategoricalDistribution):
            return int(min(param.choices))  # type: ignore[type-var]  # numbers: checked by _check_ranges
        return int(param)

    def eval_every_examples(self) -> int:
        """Examples between evaluations: fixed for the whole study so every trial reports at the same steps."""
        ev = self.evaluation
        if ev.every_n_examples is not None:
            return ev.every_n_examples
        if ev.every_n_steps is not None:
            return ev.every_n_steps * self.smallest_batch_size()
        return 1000

    def grid_counts(self) -> dict[str, int]:
        """How many values each searched parameter has on the grid, counted without listing them: every
        searched parameter must have a finite set of values."""
        counts: dict[str, int] = {}
        for name, param in self.search_space.params().items():
            if isinstance(param, (FloatDistribution, IntDistribution, CategoricalDistribution)):
                count = value_count(param)
                if count is None:
                    raise ValueError(f"search_space.{name}: the grid sampler needs choices or an int range "
                                     "(without log)")
                counts[name] = count
        for loss_name, params in self.search_space.loss_params.items():
            for pname, param in params.items():
                if isinstance(param, (FloatDistribution, IntDistribution, CategoricalDistribution)):
                    raise ValueError(f"search_space.loss_params.{loss_name}.{pname}: the grid sampler "
                                     "cannot search loss parameters; fix them")
        return counts

    def grid(self) -> dict[str, list[Any]]:
        """The grid for the grid sampler, built only once its size is known to be under the ceiling."""
        problem = body_limits.grid_size_problem(self.grid_counts(), body_limits.MAX_GRID_SIZE_CEILING)
        if problem is not None:
            raise InvalidInput(problem, field="search_space")
        searched = self.search_space.params().items()
        return {name: values for name, param in searched
                if isinstance(param, (FloatDistribution, IntDistribution, CategoricalDistribution))
                and (values := candidate_values(param)) is not None}


def check_grid_size(spec: StudySpec, cap: int) -> None:
    """A grid study's combinations against the server's cap (STSWEEP_MAX_GRID_SIZE), before anything is built.
    The model itself enforces only body_limits.MAX_GRID_SIZE_CEILING: it cannot read settings."""
    if spec.sampler.name != "grid":
        return
    problem = body_limits.grid_size_problem(spec.grid_counts(), cap)
    if problem is not None:
        raise InvalidInput(problem, field="search_space")


def check_models_root(spec: StudySpec, models_root: Path | None) -> None:
    """A base model folder (an absolute path) must lie under the server's models root (STSWEEP_MODELS_ROOT),
    told lexically at submission; the worker resolves links and checks again before loading."""
    if models_root is None:
        problem = body_limits.model_folder_without_root(spec.base_model)
    else:
        problem = body_limits.models_root_problem(spec.base_model, models_root)
    if problem is not None:
        raise InvalidInput(problem, field="base_model")


# ---------------------------------------------------------------- error messages

# Tags pydantic puts in an error's location for tagged unions; they are not fields.
_UNION_TAGS = {"distribution", "value", "float", "int", "categorical", "bool", "str", "constrained-int",
               "constrained-float", "constrained-str"}


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
