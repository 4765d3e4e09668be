"""Health checks: the only endpoints without a token."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ContextDep
from service.store.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(ctx: ContextDep) -> dict[str, str]:
    """The database is reachable (503 otherwise)."""
    ping(ctx.engine)
    return {"status": "ready"}
