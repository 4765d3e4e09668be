"""The typed HTTP client (no torch, no FastAPI): `from service.client import StsweepClient`."""

from __future__ import annotations

from service.client.http import StsweepClient, StsweepClientError

__all__ = ["StsweepClient", "StsweepClientError"]
