"""The one configuration object, read from the environment (prefix ``STSWEEP_``) at an entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    data_root: Path | None = Field(
        default=None, description="Server-side folder that file data sets may be read from. Unset: none allowed."
    )
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_json_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body of any route but data set uploads (413 above)."
    )
    docs_need_token: bool = Field(
        default=False,
        description="Whether /docs, /redoc and /openapi.json need a token (the schema holds no data; default: public).",
    )
    lease_seconds: float = Field(default=60.0, gt=0, description="A claimed trial is lost after this long silent.")
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    reaper_seconds: float = Field(default=15.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0, description="How long an idle worker waits between claims.")
    checkpoint_every_seconds: float = Field(
        default=300.0, ge=0, description="Resumable checkpoint interval while training (0: at every evaluation)."
    )
    shutdown_grace_seconds: float = Field(default=60.0, gt=0)
    failure_streak_to_pause: int = Field(default=3, ge=1)

    def artifact_location(self) -> str:
        return self.artifact_root or str(self.home / "artifacts")

    @property
    def embedded(self) -> bool:
        return self.database_url is None
