"""Public shapes of what the API returns (shared by the API, the Python client and the CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from service.core import numeric_limits
from service.core.access import DEFAULT_PROJECT, PROJECT_PATTERN, Role

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class IntermediatePoint(BaseModel):
    examples_seen: int
    value: float


class AttemptEnd(BaseModel):
    """How one attempt of a trial ended: finished, or back to the queue (and why)."""

    attempt: int | None = None
    at: datetime | None = None
    worker_id: int | None = None
    event: str | None = Field(default=None, description='the final state ("complete", "pruned", "failed"), '
                              'or "lease expired" (its worker died, or lost the database for longer than the '
                              'lease), or "given back (...)" (worker stopping, study stopped, a transient fault)')
    fault: str | None = Field(default=None, description="the transient fault it met, if any")
    examples_seen: int | None = Field(default=None, description="how far it had trained")
    resume_examples: int | None = Field(default=None, description="where the next attempt resumed from (its "
                                        "last resumable checkpoint; null: from the start)")


class TrialPublic(BaseModel):
    number: int
    state: str
    params: dict[str, Any] | None
    value: float | None
    metrics: dict[str, Any] | None = None
    attempts: int
    failure_reason: str | None
    below_baseline: bool | None = None
    examples_seen: int = 0
    planned_examples: int | None = None
    last_eval: float | None = None
    eta_seconds: float | None = None
    worker_id: int | None = None
    has_checkpoint: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    intermediate: list[IntermediatePoint] = Field(default_factory=list)
    kind: str = Field(default="search", description="'search', or 'confirm': trial `confirm_of`'s configuration "
                      "trained again with `train_seed`, once the search budget was spent")
    confirm_of: int | None = None
    train_seed: int | None = Field(default=None, description="the training seed (null: the study's seed)")
    fault_count: int = Field(default=0, description="give-backs after transient faults (never counted in "
                             "`attempts`)")
    history: list[AttemptEnd] = Field(default_factory=list, description="every attempt that ended, oldest "
                                      "first")
    precision: str | None = Field(default=None, description="what the trial trained in: 'fp32', 'bf16' (autocast; "
                                  "the weights and checkpoints stay float32) or 'fp16'; null until it starts training")


class TrialPage(Page[TrialPublic]):
    """A page of a study's trials; `next_cursor` (null on the last page) asks for the next one at the cost of a
    page, however deep (`?cursor=`, instead of `offset`)."""

    next_cursor: str | None = None


class BestTrial(BaseModel):
    trial_number: int
    value: float
    params: dict[str, Any] | None


class Baseline(BaseModel):
    value: float | None
    subset_value: float | None
    status: Literal["pending", "ready", "failed"] = Field(
        default="ready", description="pending: a worker computes it after a trial (never before the first); "
        "failed: its attempts are spent, or the study failed before it was computed")


class TestScore(BaseModel):
    metric: str
    value: float
    trial_number: int | None = Field(default=None, description="the trial whose checkpoint was scored")
    rescoring: bool = Field(default=False, description="the winner changed (an extend): its score replaces this "
                            "one once a worker has computed it")


class StudyWinner(BaseModel):
    """The configuration the study recommends. With `confirm`, runs are grouped by configuration (the search
    trial and its confirm runs) and the winner is the confirmed configuration with the best mean; otherwise
    (or before any confirm run completed) the best trial, with runs 1 and std null."""

    params: dict[str, Any] | None
    mean: float
    std: float | None = Field(description="sample standard deviation over the runs (null for one run)")
    runs: int
    trial_numbers: list[int]


class ExtendRequest(BaseModel):
    """More search trials for a study: `n_trials` slots are added after its last trial."""

    model_config = ConfigDict(extra="forbid")

    n_trials: int = Field(**numeric_limits.field("extend.n_trials"))


class RunningTrial(BaseModel):
    number: int
    examples_seen: int
    planned_examples: int | None
    eta_seconds: float | None


class Progress(BaseModel):
    trials_finished: int
    n_trials: int
    fraction: float
    running: list[RunningTrial]
    elapsed_seconds: float | None
    eta_seconds: float | None = Field(description="seconds until the study is expected to end (null: not active, "
                                      "or nothing to estimate from yet); see eta_bound")
    eta_bound: Literal["trials", "timeout"] | None = Field(
        default=None, description="what bounds eta_seconds: 'trials' (the remaining trials' expected examples, "
        "pruning included, over the study's observed throughput) or 'timeout' (budget.timeout_seconds ends the "
        "study first: no trial starts after it, running ones finish)")


class StudyPublic(BaseModel):
    id: str
    name: str
    project: str = DEFAULT_PROJECT  # (a server from before projects sends none: its one project)
    status: str
    status_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    best: BestTrial | None
    winner: StudyWinner | None = None
    baseline: Baseline | None
    test: TestScore | None
    progress: Progress
    objective: dict[str, Any]
    checkpoint_bytes: int
    spec: dict[str, Any] | None = None


class WorkerPublic(BaseModel):
    id: int
    host: str
    pid: int
    device: str
    status: str
    current_trial: dict[str, Any] | None
    last_heartbeat_at: datetime
    heartbeat_age_seconds: float
    trials_done: int
    started_at: datetime
    scheduler: str | None = Field(default=None, description="the batch scheduler it runs under ('slurm'), if any")
    scheduler_job: str | None = Field(default=None, description="its SLURM array job id (or job id)")
    scheduler_task: str | None = Field(default=None, description="its SLURM array task id")
    bf16: str | None = Field(default=None, description="the native bfloat16 unit found at start-up: 'amx' or "
                             "'avx512_bf16' (a CPU), 'cuda' (a GPU with bf16), 'none'; null: a worker older than "
                             "this field")


class ColumnInfo(BaseModel):
    name: str
    type: str  # the Arrow type as read (CSV/TSV columns are always "string")
    role: str | None = None  # the task role this column was checked as, at upload


class DatasetPublic(BaseModel):
    id: str
    project: str = DEFAULT_PROJECT  # (a server from before projects sends none: its one project)
    sha256: str
    filename: str
    format: str
    size_bytes: int
    row_count: int
    columns: list[ColumnInfo]
    duplicate_rows: int
    preview: list[dict[str, Any]] | None = None  # first rows; omitted in lists
    created_at: datetime
    used_by: list[str] | None = None  # ids of studies referencing it; only on a single read


class TokenPublic(BaseModel):
    """An API token as listed: never its secret or hash (the secret is shown once, at creation)."""

    id: int
    name: str
    project: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreate(BaseModel):
    """A new token of `project` with `role`; `expires_in`: seconds, or a duration like "30d" (null: never)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    project: str = Field(default="default", pattern=PROJECT_PATTERN, max_length=63)
    role: Role = "member"
    expires_in: int | str | None = Field(default=None, description='seconds, or "30d", "12h", "90m", "3600s"')


class TokenCreated(TokenPublic):
    """The new token's secret, shown this once: only its hash is stored."""

    token: str


class ProjectQuotas(BaseModel):
    """Quotas (null: unlimited) and the fair-share weight of a project."""

    model_config = ConfigDict(extra="forbid")

    share: float = Field(default=1.0, **numeric_limits.field("project.share"))
    max_active_studies: int | None = Field(default=None, **numeric_limits.field("project.max_active_studies"))
    max_trials: int | None = Field(default=None, **numeric_limits.field("project.max_trials"))
    max_stored_bytes: int | None = Field(default=None, **numeric_limits.field("project.max_stored_bytes"))


class ProjectCreate(ProjectQuotas):
    name: str = Field(pattern=PROJECT_PATTERN, max_length=63)


class ProjectUpdate(BaseModel):
    """The fields sent are changed (a quota set to null: unlimited again); the rest stay."""

    model_config = ConfigDict(extra="forbid")

    share: float | None = Field(default=None, **numeric_limits.field("project.share"))
    max_active_studies: int | None = Field(default=None, **numeric_limits.field("project.max_active_studies"))
    max_trials: int | None = Field(default=None, **numeric_limits.field("project.max_trials"))
    max_stored_bytes: int | None = Field(default=None, **numeric_limits.field("project.max_stored_bytes"))


class ProjectUsage(BaseModel):
    active_studies: int
    trials: int  # queued plus running (a stopped study's queued slots left out until it runs again)
    stored_bytes: int  # data sets plus final checkpoints


class ProjectPublic(ProjectQuotas):
    name: str
    data_dir: str
    created_at: datetime
    usage: ProjectUsage


class ErrorDetail(BaseModel):
    """One input at fault: the field (dotted path, or a header / parameter name) and what is wrong with it."""

    model_config = ConfigDict(extra="forbid")

    field: str
    message: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="machine-readable kind, e.g. invalid_input, not_found, conflict, unauthorized")
    message: str = Field(description="what went wrong, for a person; a 422 starts with the field at fault")
    field: str | None = Field(default=None, description="the input at fault, when one is (left out otherwise)")
    details: list[ErrorDetail] | None = Field(default=None, description="every input at fault (422s)")


class ErrorBody(BaseModel):
    """The one JSON shape of every 4xx and 5xx answer (service/api/errors.py and the request guard)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorInfo
