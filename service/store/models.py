"""Our tables (Optuna keeps its own, in its own schema). Created only by the Alembic revisions in migrations/."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.core.states import STUDY_STATUSES, TRIAL_STATES



class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _seq_column() -> Mapped[int]:
    """Every insert and update (a trigger, see migrations) takes the next value of one sequence: the dashboard
    asks for "what changed since cursor N" instead of reloading a whole study."""
    return mapped_column(BigInteger, server_default=text("nextval('change_seq')"), nullable=False)


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, server_default="0")


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Project(Base):
    """A team's space: its studies, data sets and tokens; its quotas (NULL: unlimited) and fair share
    (service/store/projects.py, fair_share.py). Created by migration 0010_projects with `default`."""

    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("name ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name="ck_projects_name"),
        CheckConstraint("share > 0 AND share <= 1000000", name="ck_projects_share"),
        CheckConstraint("max_active_studies IS NULL OR max_active_studies >= 0", name="ck_projects_studies"),
        CheckConstraint("max_trials IS NULL OR max_trials >= 0", name="ck_projects_trials"),
        CheckConstraint("max_stored_bytes IS NULL OR max_stored_bytes >= 0", name="ck_projects_bytes"),
    )

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    # The folder under STSWEEP_DATA_ROOT that the project's `path` references resolve in ('': the root itself).
    data_dir: Mapped[str] = mapped_column(String(63), nullable=False)
    share: Mapped[float] = mapped_column(Double, nullable=False, server_default="1")
    max_active_studies: Mapped[int | None] = mapped_column(Integer)
    max_trials: Mapped[int | None] = mapped_column(BigInteger)  # queued plus running
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)  # data sets plus final checkpoints
    # The fair-share scheduler's virtual time: claims taken, each worth 1 / share (service/store/fair_share.py).
    vtime: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _now()


def _project() -> Mapped[str]:
    return mapped_column(ForeignKey("projects.name", ondelete="RESTRICT"), nullable=False, server_default="default")


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('admin', 'member', 'viewer')", name="ck_api_tokens_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # NULL: never expires
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    project: Mapped[str] = _project()
    role: Mapped[str] = mapped_column(String(16), nullable=False)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        CheckConstraint(f"status IN {STUDY_STATUSES}", name="ck_studies_status"),
        Index("ix_studies_status_created", "status", "created_at"),
        Index("ix_studies_seq", "seq"),
        Index("ix_studies_project_created", "project", "created_at"),
        UniqueConstraint("project", "idempotency_key", name="uq_studies_project_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    project: Mapped[str] = _project()
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="queued")
    status_reason: Mapped[str | None] = mapped_column(Text)
    optuna_study_name: Mapped[str] = mapped_column(String(80), nullable=False, unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # Copied out of the spec so the claim query needs no JSON.
    n_trials: Mapped[int] = mapped_column(Integer, nullable=False)
    max_concurrent_trials: Mapped[int] = mapped_column(Integer, nullable=False)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    timeout_seconds: Mapped[float | None] = mapped_column(Double)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)
    baseline_value: Mapped[float | None] = mapped_column(Double)
    baseline_subset_value: Mapped[float | None] = mapped_column(Double)
    test_metric: Mapped[str | None] = mapped_column(String(100))
    test_value: Mapped[float | None] = mapped_column(Double)
    # The test-split score is a job with a lease, like a trial: any free worker takes it, again if one dies.
    test_lease_token: Mapped[Any | None] = mapped_column(UUID(as_uuid=True))
    test_lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    test_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # The trial whose checkpoint test_value scored; test_rescore: a newer winner (after an extend) waits for its
    # score, test_value keeps the older winner's until that lands.
    test_trial_number: Mapped[int | None] = mapped_column(Integer)
    test_rescore: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    # The untrained baseline is a job with a lease too: computed once per study, off a lone worker's first trial.
    baseline_lease_token: Mapped[Any | None] = mapped_column(UUID(as_uuid=True))
    baseline_lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    baseline_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    baseline_recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_streak: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = _seq_column()


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number", name="uq_trials_study_number"),
        CheckConstraint(f"state IN {TRIAL_STATES}", name="ck_trials_state"),
        CheckConstraint("kind IN ('search', 'confirm')", name="ck_trials_kind"),
        CheckConstraint("precision IN ('fp32', 'bf16', 'fp16')", name="ck_trials_precision"),
        Index("ix_trials_claim", "study_id", "state", "number"),
        Index("ix_trials_lease", "lease_expires_at", postgresql_where=text("state = 'running'")),
        Index("ix_trials_running_worker", "worker_id", postgresql_where=text("state = 'running'")),
        Index("ix_trials_study_seq", "study_id", "seq"),
        Index("ix_trials_best", "study_id", "rank_key", "number",
              postgresql_where=text("state = 'complete' AND rank_key IS NOT NULL")),
        Index("ix_trials_optuna_trial", "optuna_trial_id", postgresql_where=text("optuna_trial_id IS NOT NULL")),
        Index("ix_trials_kept", "study_id", postgresql_where=text("checkpoint_key IS NOT NULL")),
        Index("ix_trials_confirm", "study_id", postgresql_where=text("kind = 'confirm'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="queued")
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # 'search': a point of the search; 'confirm': search trial `confirm_of`'s configuration again, with
    # `train_seed` (NULL: the study's seed), once the search budget is spent. Never shown to the sampler.
    kind: Mapped[str] = mapped_column(String(16), nullable=False, server_default="search")
    confirm_of: Mapped[int | None] = mapped_column(Integer)
    train_seed: Mapped[int | None] = mapped_column(BigInteger)
    # A search slot's index among its study's search slots (it runs enqueue_trials[search_index] when there is
    # one), stored when the slot is created; NULL for confirm runs.
    search_index: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Double)
    # The value turned so that lower is better (-value when maximizing); NULL unless a finite value: the one
    # ranking of trials, served by ix_trials_best (see service/ranking.py).
    rank_key: Mapped[float | None] = mapped_column(Double)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    below_baseline: Mapped[bool | None] = mapped_column(Boolean)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[Any | None] = mapped_column(UUID(as_uuid=True))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    examples_seen: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    planned_examples: Mapped[int | None] = mapped_column(BigInteger)
    last_eval: Mapped[float | None] = mapped_column(Double)
    eta_seconds: Mapped[float | None] = mapped_column(Double)
    resume_key: Mapped[str | None] = mapped_column(Text)
    resume_sha256: Mapped[str | None] = mapped_column(String(64))
    resume_examples: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_key: Mapped[str | None] = mapped_column(Text)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    checkpoint_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # What the trial trained in ('fp32', 'bf16' autocast, 'fp16' autocast), set when it starts training (NULL
    # before, and for trials trained before migration 0011).
    precision: Mapped[str | None] = mapped_column(String(8))
    # One entry per attempt that ended without finishing the trial, with the fault it met (see queue.py).
    history: Mapped[list[Any]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    # Give-backs after transient faults (database, object store, disk full): never one of max_attempts.
    fault_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = _seq_column()


class ClaimPermit(Base):
    """A study's concurrency cap as rows: slot 0..max_concurrent_trials-1, held by the running trial `trial_id`
    (NULL: free). A claim takes a free permit with its trial (service/store/queue.py); triggers (migration
    0007) give a new study its permits and free a trial's permit whenever it stops running."""

    __tablename__ = "claim_permits"
    __table_args__ = (
        Index("ix_claim_permits_free", "study_id", "slot", postgresql_where=text("trial_id IS NULL")),
        Index("ix_claim_permits_trial", "trial_id", unique=True, postgresql_where=text("trial_id IS NOT NULL")),
    )

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int | None] = mapped_column(BigInteger)


class TrialCount(Base):
    """Per-study sums over the trials, by state and kind, kept by triggers on `trials` (migration 0008_counts): each
    change inserts delta rows, folded now and then; a study's numbers are the sum of its rows
    (service/store/trial_counts.py). A running trial's examples, plan and checkpoint bytes are not counted here
    while it runs."""

    __tablename__ = "trial_counts"
    __table_args__ = (Index("ix_trial_counts_study", "study_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    study_id: Mapped[str] = mapped_column(String(40), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    trials: Mapped[int] = _count()
    attempts: Mapped[int] = _count()
    examples: Mapped[int] = _count()
    seen_of_planned: Mapped[int] = _count()
    planned: Mapped[int] = _count()
    checkpoint_bytes: Mapped[int] = _count()
    reaps: Mapped[int] = _count()
    given_back: Mapped[int] = _count()
    given_back_fault: Mapped[int] = _count()


class IntermediateValue(Base):
    __tablename__ = "intermediate_values"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    examples_seen: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float] = mapped_column(Double, nullable=False)
    created_at: Mapped[datetime] = _now()
    seq: Mapped[int] = _seq_column()


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    device: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="idle")
    current_trial_id: Mapped[int | None] = mapped_column(BigInteger)
    trials_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    started_at: Mapped[datetime] = _now()
    last_heartbeat_at: Mapped[datetime] = _now()
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The batch scheduler job the worker runs in (NULL: started by hand): 'slurm', the array job id (or job id
    # outside an array), the array task id.
    scheduler: Mapped[str | None] = mapped_column(String(16))
    scheduler_job: Mapped[str | None] = mapped_column(String(64))
    scheduler_task: Mapped[str | None] = mapped_column(String(64))
    # The native bfloat16 unit found at start-up: 'amx', 'avx512_bf16' (CPU), 'cuda' (a GPU with bf16), 'none';
    # NULL for a worker that predates migration 0011 (workers/devices.py).
    bf16: Mapped[str | None] = mapped_column(String(16))


class MaintenanceLease(Base):
    """One elected job of the deployment (`maintenance`: the reaper and the reconciler): only the process that
    holds the row, until `expires_at`, runs a round (service/store/election.py)."""

    __tablename__ = "maintenance_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 server_default=text("'-infinity'"))
    rounds: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class ReconcileMark(Base):
    """The reconciler's queue: a trigger (see migrations) adds one in the same transaction as each state change
    that may leave Optuna or the artifact store behind (a trial leaving `running`, a study changing status)."""

    __tablename__ = "reconcile_marks"
    __table_args__ = (Index("ix_reconcile_marks_due", "due_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign key: its check would share-lock the study row in every finish (see the migration).
    study_id: Mapped[str] = mapped_column(String(40), nullable=False)
    trial_id: Mapped[int | None] = mapped_column(BigInteger)  # NULL: the study's status changed
    due_at: Mapped[datetime] = _now()


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("project", "sha256", name="uq_datasets_project_sha256"),
        Index("ix_datasets_project_created", "project", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = _project()
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    storage_key: Mapped[str] = mapped_column(Text, nullable=False)
    row_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    columns: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    duplicate_rows: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    preview: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _now()


class StudyDataset(Base):
    """Which datasets a study uses: a dataset is not deleted while any study references it."""

    __tablename__ = "study_datasets"

    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
