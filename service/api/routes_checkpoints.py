"""Final checkpoints by id: the best trial's (`/v1/studies/{id}/best-checkpoint`) or any finished trial's
(`/v1/studies/{id}/trials/{n}/checkpoint`). GET and HEAD, with single HTTP byte ranges for resuming.

The body is the stored tar byte-for-byte. Headers: `X-Checksum-Sha256` (of the whole tar, also on a 206),
`ETag` (the quoted sha256; send it back as `If-Range` when resuming), `Content-Length`, `Accept-Ranges: bytes`,
`Content-Disposition: attachment; filename="<study-name>-trial-<n>.tar"`, `X-Study-Id`, `X-Trial-Number`;
a 206 adds `Content-Range`. A range past the end is 416.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import StreamingResponse

from service.store import checkpoints
from service.api.deps import VIEWER, ContextDep
from service.api.routes_studies import StudyId
from service.store.checkpoints import Checkpoint
from service.context import Context

router = APIRouter(prefix="/v1/studies", tags=["checkpoints"])

TrialNumber = Annotated[int, Depends(checkpoints.trial_number_param)]
_TAR = "application/x-tar"


def _serve(request: Request, ctx: Context, ckpt: Checkpoint) -> Response:
    size = checkpoints.stored_size(ctx.artifacts, ckpt)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": ckpt.etag,
        "X-Checksum-Sha256": ckpt.sha256,
        "Content-Disposition": f'attachment; filename="{ckpt.filename}"',
        "X-Study-Id": ckpt.study_id,
        "X-Trial-Number": str(ckpt.trial_number),
        "Cache-Control": "no-cache",
    }
    if_range = request.headers.get("if-range")
    span = None
    if if_range is None or if_range.strip() == ckpt.etag:  # a stale If-Range gets the whole (new) object
        span = checkpoints.parse_range(request.headers.get("range"), size)
    start, end = span if span is not None else (0, size - 1)
    code = status.HTTP_200_OK
    if span is not None:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=_TAR)
    body = ctx.artifacts.open_range(ckpt.key, start, end if span is not None else None)
    return StreamingResponse(body, status_code=code, headers=headers, media_type=_TAR)


# The body's media type; 206, 416 and the error statuses are added with every other route's (service/api/openapi.py).
_TAR_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {_TAR: {}}}}
# The headers _serve reads from the request (documented: clients, and the fuzz test, send them).
_RANGE_HEADERS: dict[str, Any] = {"parameters": [
    {"name": "Range", "in": "header", "required": False,
     "schema": {"type": "string", "pattern": "^bytes=[0-9]*-[0-9]*$"},
     "description": "One byte range, `bytes=START-[END]` or `bytes=-SUFFIX`: 206 with that part, 416 when it "
                    "does not overlap the tar. A malformed or multi-range header is ignored (200, the whole tar)."},
    {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "The ETag of an earlier answer: the range is served only while the tar is the same one."},
]}


@router.head("/{study_id}/best-checkpoint", operation_id="head_best_checkpoint", response_class=Response,
             openapi_extra=_RANGE_HEADERS, dependencies=VIEWER)
@router.get("/{study_id}/best-checkpoint", operation_id="download_best_checkpoint",
            response_class=StreamingResponse, responses=_TAR_RESPONSES, openapi_extra=_RANGE_HEADERS,
            dependencies=VIEWER)
def download_best_checkpoint(study_id: StudyId, request: Request, ctx: ContextDep) -> Response:
    """The best complete trial's final model folder as an uncompressed tar (resumable with Range)."""
    return _serve(request, ctx, checkpoints.best_checkpoint(ctx.sessions, study_id))


@router.head("/{study_id}/trials/{number}/checkpoint", operation_id="head_trial_checkpoint",
             response_class=Response, openapi_extra=_RANGE_HEADERS, dependencies=VIEWER)
@router.get("/{study_id}/trials/{number}/checkpoint", operation_id="download_trial_checkpoint",
            response_class=StreamingResponse, responses=_TAR_RESPONSES, openapi_extra=_RANGE_HEADERS,
            dependencies=VIEWER)
def download_trial_checkpoint(study_id: StudyId, number: TrialNumber, request: Request, ctx: ContextDep) -> Response:
    """A finished trial's final checkpoint, while it still has one (404 otherwise, saying why)."""
    return _serve(request, ctx, checkpoints.trial_checkpoint(ctx.sessions, study_id, number))
