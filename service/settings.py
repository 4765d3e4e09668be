"""The one configuration object, read from the environment (prefix ``STSWEEP_``) at an entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.body_limits import DEFAULT_MAX_GRID_SIZE, MAX_GRID_SIZE_CEILING
from service.core.limits import DEFAULT_LIMITS, ReadLimits

DEFAULT_HOME = Path.home() / ".stsweep"


class Settings(BaseSettings):
    """Everything stsweep reads from its environment. Build it once at the entry point and pass it down."""

    model_config = SettingsConfigDict(env_prefix="STSWEEP_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for our tables. Unset: an embedded PostgreSQL under `home` is started.",
    )
    optuna_schema: str = Field(default="optuna", description="Schema that holds Optuna's own tables.")
    home: Path = Field(default=DEFAULT_HOME, description="Local state: embedded database, default artifacts.")
    artifact_root: str | None = Field(
        default=None,
        description="Where checkpoints and datasets live: a folder, or s3://bucket/prefix. Default: HOME/artifacts.",
    )
    models_root: Path | None = Field(
        default=None,  # filled from home by _default_models_root: never None once built
        description="The only folder a study's base_model may name on the workers (links resolved); hub ids are "
                    "not folders. Default: HOME/models.",
    )
    data_root: Path | None = Field(
        default=None, description="Server-side folder that file data sets may be read from. Unset: none allowed."
    )
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(
        default=DEFAULT_LIMITS.max_upload_bytes, gt=0,
        description="Largest data set upload, and most bytes a hub data set's files for one split may hold (413).",
    )
    max_json_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body of any route but data set uploads (413 above)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="Most time a connection may take to send a request's line and headers, from its first byte "
                    "(or from connecting); then it is closed (slow-loris clients).",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="Most time between two parts of a request body; then the answer is 408 and the connection "
                    "is closed.",
    )
    max_decoded_bytes: int = Field(
        default=DEFAULT_LIMITS.max_decoded_bytes, gt=0,
        description="Most a data file (upload or worker file) may decode to: text bytes plus 8 per cell (413 above).",
    )
    max_rows: int = Field(default=DEFAULT_LIMITS.max_rows, gt=0, description="Most rows in a data file (413 above).")
    max_columns: int = Field(
        default=DEFAULT_LIMITS.max_columns, gt=0, description="Most columns (or fields in a row) of a data file (422)."
    )
    max_cell_bytes: int = Field(
        default=DEFAULT_LIMITS.max_cell_bytes, gt=0, description="Largest value in a data file, in UTF-8 bytes (422)."
    )
    max_line_bytes: int = Field(
        default=DEFAULT_LIMITS.max_line_bytes, gt=0,
        description="Longest line of a CSV / TSV / JSONL data file (or element of a JSON array), in bytes (422).",
    )
    max_jsonl_depth: int = Field(
        default=DEFAULT_LIMITS.max_json_depth, gt=0,
        description="Deepest nesting of one JSONL row of a data file, checked before it is parsed (422).",
    )
    max_expansion: int = Field(
        default=DEFAULT_LIMITS.max_expansion, gt=0,
        description="Most times its own size a data file may decode to, once past 16 MiB (413: a compression bomb).",
    )
    max_grid_size: int = Field(
        default=DEFAULT_MAX_GRID_SIZE, ge=1, le=MAX_GRID_SIZE_CEILING,
        description="Most combinations a grid-sampler study may have (counted at submission, never built; 422 above).",
    )
    docs_need_token: bool = Field(
        default=False,
        description="Whether /docs, /redoc and /openapi.json need a token (the schema holds no data; default: public).",
    )
    metrics_need_token: bool = Field(
        default=False,
        description="Whether GET /metrics needs a token (default: public, so a Prometheus scraper works as is).",
    )
    optuna_recent_trials: int = Field(
        default=900, ge=1, le=1_000_000,
        description="Newest finished trials of a study a worker's sampler and pruners see (with the best ones).",
    )
    optuna_best_trials: int = Field(
        default=100, ge=0, le=1_000_000,
        description="Best complete trials of a study a worker's sampler sees besides the newest ones.",
    )
    lease_seconds: float = Field(default=60.0, gt=0, description="A claimed trial is lost after this long silent.")
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker renews its lease; must be shorter than lease_seconds."
    )
    reaper_seconds: float = Field(default=15.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0, description="How long an idle worker waits between claims.")
    checkpoint_every_seconds: float = Field(
        # The training thread only copies the state in memory; the interval adapts below this maximum so that a
        # checkpoint costs 2% of the trial's time (workers/checkpoint_policy.py).
        default=60.0, ge=0,
        description="Longest time between two resumable checkpoints while training; shorter when they are cheap "
                    "(2% budget) (0: at every evaluation).",
    )
    shutdown_grace_seconds: float = Field(default=60.0, gt=0)
    failure_streak_to_pause: int = Field(default=3, ge=1)
    restart_backoff_max_seconds: float = Field(
        default=60.0, gt=0,
        description="Longest wait before `stsweep worker` (several GPU slots) or `stsweep up` restarts a child that "
                    "keeps exiting; also how often a crash-looping child is retried.",
    )
    fault_retry_seconds: float = Field(
        default=300.0, gt=0,
        description="How long a worker retries the artifact store for one checkpoint before it skips a resumable "
                    "one or gives a trained trial back to the queue (the database is retried for as long as the "
                    "lease holds).",
    )

    @model_validator(mode="after")
    def _default_models_root(self) -> Settings:
        if self.models_root is None:
            self.models_root = self.home / "models"
        return self

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"heartbeat_seconds ({self.heartbeat_seconds:g}) must be shorter than lease_seconds "
                             f"({self.lease_seconds:g}): every lease would expire between two heartbeats "
                             "(STSWEEP_HEARTBEAT_SECONDS, STSWEEP_LEASE_SECONDS)")
        return self

    def read_limits(self) -> ReadLimits:
        """The limits every data file is read with (the API's upload check and the workers' loader)."""
        return ReadLimits(max_decoded_bytes=self.max_decoded_bytes, max_rows=self.max_rows,
                          max_columns=self.max_columns, max_cell_bytes=self.max_cell_bytes,
                          max_line_bytes=self.max_line_bytes, max_json_depth=self.max_jsonl_depth,
                          max_expansion=self.max_expansion, max_upload_bytes=self.max_upload_bytes)

    def artifact_location(self) -> str:
        return self.artifact_root or str(self.home / "artifacts")

    @property
    def embedded(self) -> bool:
        return self.database_url is None
