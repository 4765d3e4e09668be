"""The dashboard: the page at `/`, its assets under `/static/`, and the JSON behind its charts and live updates.

The HTML and static files need no token (they hold no data); every `/v1/...` route does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse, HTMLResponse
from starlette.concurrency import run_in_threadpool

from service.store import dashboard_reads as q
from service.store import studies
from service.api.deps import VIEWER, Caller, ContextDep, SessionsDep
from service.api.routes_studies import StudyId
from service.api.dashboard import STATIC_DIR, plotly_js
from service.api.dashboard import importance as imp
from service.core import numeric_limits
from service.core.errors import NotFound

router = APIRouter(tags=["dashboard"])

_ASSETS = {"app.js": "text/javascript", "charts.js": "text/javascript", "app.css": "text/css"}


def _json(body: Any) -> Response:
    """Plain json.dumps: the chart payloads are big lists of numbers, FastAPI's encoder walks each one."""
    return Response(json.dumps(body, separators=(",", ":"), default=str), media_type="application/json")


# ------------------------------------------------------------------ the page and its assets


@router.get("/", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"),
                        headers={"Cache-Control": "no-cache"})


@router.get("/static/plotly.min.js", include_in_schema=False)
def plotly_script(accept_encoding: Annotated[str, Header()] = "") -> Response:
    raw, packed = plotly_js()
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if "gzip" in accept_encoding:
        return Response(packed, media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return Response(raw, media_type="text/javascript", headers=headers)


@router.get("/static/{name}", include_in_schema=False)
def static_asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise NotFound(f"no static file {name!r}", field="name")
    return FileResponse(STATIC_DIR / name, media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})


# ------------------------------------------------------------------ live updates


@router.get("/v1/studies/{study_id}/changes", dependencies=VIEWER)
def study_changes(study_id: StudyId, sessions: SessionsDep,
                  cursor: Annotated[int, Query(**numeric_limits.field("query.cursor"))] = 0) -> Response:
    """What changed since `cursor`: trials written since (each with only its new intermediate points), the
    study summary when anything changed, and the new cursor. `more`: more changes wait, ask again at once."""
    body = q.changes(sessions, study_id, cursor)
    body["study"] = (studies.get_study(sessions, study_id, with_spec=False).model_dump(mode="json")
                     if body.pop("study_changed") else None)
    return _json(body)


# ------------------------------------------------------------------ charts


@router.get("/v1/studies/{study_id}/charts/history", dependencies=VIEWER)
def chart_history(study_id: StudyId, sessions: SessionsDep) -> Response:
    """Complete trials' objective values by trial number, and the best so far."""
    return _json(q.history(sessions, study_id))


@router.get("/v1/studies/{study_id}/charts/curves", dependencies=VIEWER)
def chart_curves(study_id: StudyId, sessions: SessionsDep) -> Response:
    """Learning curves: intermediate values vs examples seen; pruned trials say where they stopped."""
    return _json(q.curves(sessions, study_id))


@router.get("/v1/studies/{study_id}/charts/parallel", dependencies=VIEWER)
def chart_parallel(study_id: StudyId, sessions: SessionsDep) -> Response:
    """Searched hyperparameters vs the objective, for complete trials."""
    spec, _, _ = studies.load_spec(sessions, study_id)
    return _json(q.parallel(sessions, study_id, imp.describe(spec.model_dump(mode="json"))))


@router.get("/v1/studies/{study_id}/charts/importance", dependencies=VIEWER)
async def chart_importance(study_id: StudyId, sessions: SessionsDep) -> Response:
    """Optuna's fANOVA importance over the most recent complete trials (cached until they change)."""
    done = await run_in_threadpool(q.complete_trials, sessions, study_id, imp.MAX_TRIALS)
    result = await run_in_threadpool(imp.compute, study_id, done.version, done.study.spec, done.study.direction,
                                     done.rows)
    return _json({**result, "objective": {"metric": done.study.spec.get("objective", {}).get("metric"),
                                          "direction": done.study.direction},
                  "n_complete": done.n_complete, "cursor": done.cursor})


# ------------------------------------------------------------------ workers


@router.get("/v1/workers", dependencies=VIEWER)
def list_workers(ctx: ContextDep, principal: Caller) -> Response:
    """Every live worker (and the most recently stopped): host, device, current trial, heartbeat age. The fleet
    is shared, so every token sees every worker; a trial of a project the token does not see shows as busy
    with no study or trial named."""
    items = q.workers(ctx.sessions, stale_after_seconds=ctx.settings.lease_seconds,
                      project=principal.project_filter(None))
    return _json({"items": [w.model_dump(mode="json") for w in items], "total": len(items)})
