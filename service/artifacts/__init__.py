"""Artifact store: checkpoints and data sets as immutable, checksummed objects in a folder or on S3."""

from __future__ import annotations

from service.artifacts.factory import open_store, parse_s3_url
from service.artifacts.local import LocalArtifactStore
from service.artifacts.store import ArtifactInfo, ArtifactStore, validate_key, validate_prefix

__all__ = [
    "ArtifactInfo",
    "ArtifactStore",
    "LocalArtifactStore",
    "open_store",
    "parse_s3_url",
    "validate_key",
    "validate_prefix",
]
