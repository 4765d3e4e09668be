"""Build the artifact store that ``Settings.artifact_location()`` names: a folder or ``s3://bucket/prefix``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from service.artifacts.local import LocalArtifactStore
from service.artifacts.store import ArtifactStore
from service.core.errors import InvalidInput

if TYPE_CHECKING:
    from service.settings import Settings


def open_store(settings: Settings) -> ArtifactStore:
    location = settings.artifact_location()
    if location.startswith("s3://"):
        return _open_s3(settings, location)
    if "://" in location:
        raise InvalidInput(f"unsupported artifact root {location!r}: use a folder or s3://bucket/prefix",
                           field="artifact_root")  # fmt: skip
    return LocalArtifactStore(location)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInput(f"invalid S3 artifact root {url!r}: expected s3://bucket/prefix", field="artifact_root")
    return parts.netloc, parts.path.strip("/")


def _open_s3(settings: Settings, url: str) -> ArtifactStore:
    import boto3  # imported only when S3 is used
    from botocore.config import Config

    from service.artifacts.s3 import S3ArtifactStore

    bucket, prefix = parse_s3_url(url)
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible servers (MinIO, moto, Ceph) behind a custom endpoint want path-style addressing.
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret,
        region_name=settings.s3_region,
        config=config,
    )
    try:
        return S3ArtifactStore(client, bucket, prefix)
    except InvalidInput as exc:
        raise InvalidInput(f"invalid S3 artifact prefix in {url!r}", field="artifact_root") from exc
