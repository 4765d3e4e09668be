"""One JSON error shape for every 4xx/5xx, and the one place domain errors become HTTP statuses.

    {"error": {"code": "invalid_input", "message": "...", "field": "search_space.learning_rate.low",
               "details": [{"field": ..., "message": ...}, ...]}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.core import errors
from service.core.spec import field_errors
from service.store.db import unavailable_reason

log = logging.getLogger("stsweep.api")

STATUS: dict[type[errors.StsweepError], tuple[int, str]] = {
    errors.NotFound: (404, "not_found"),
    errors.Conflict: (409, "conflict"),
    errors.RangeNotSatisfiable: (416, "range_not_satisfiable"),  # before InvalidInput, its base
    errors.InvalidInput: (422, "invalid_input"),
    errors.PayloadTooLarge: (413, "payload_too_large"),
    errors.RequestTimeout: (408, "request_timeout"),
    errors.Unauthorized: (401, "unauthorized"),
    errors.Forbidden: (403, "forbidden"),
    errors.QuotaExceeded: (429, "quota_exceeded"),
    errors.DatabaseUnavailable: (503, "database_unavailable"),
    errors.StorageError: (503, "storage_unavailable"),
    errors.UnsafeArchive: (422, "unsafe_archive"),
    errors.LeaseLost: (409, "lease_lost"),
}


def error_body(code: str, message: str, field: str | None = None,
               details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    if details:
        body["details"] = details
    return {"error": body}


def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in (408, 413) or status >= 500 and status != 503:
        # The rest of an oversized or stalled body is not read, and after a failure the connection is not trusted.
        headers["Connection"] = "close"
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_response(details: list[dict[str, str]]) -> JSONResponse:
    first = details[0] if details else {"field": "body", "message": "invalid"}
    message = f"{first['field']}: {first['message']}"
    return _response(422, error_body("invalid_input", message, first["field"], details))


def _strip_location(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # FastAPI prefixes "body" / "query" / "path"; a study body is the StudySpec itself.
    return loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc


class _Wrapped:
    def __init__(self, errs: list[dict[str, Any]]) -> None:
        self._errs = errs

    def errors(self) -> list[dict[str, Any]]:
        return self._errs


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's own 405 names only the first route's)."""
    routes = request.app.router.routes
    allowed = [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
               if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes)]
    return allowed


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.StsweepError)
    async def _domain(_: Request, exc: errors.StsweepError) -> JSONResponse:
        status, code = next((v for k, v in STATUS.items() if isinstance(exc, k)), (400, "bad_request"))
        if status >= 500:
            log.warning("%s: %s", code, exc.message, exc_info=exc.__cause__)
        if isinstance(exc, errors.InvalidInput) and exc.field:
            # Same form as a schema error: "field: what is wrong", with the field named in full.
            detail = {"field": exc.field, "message": exc.message}
            return _response(status, error_body(code, f"{exc.field}: {exc.message}", exc.field, [detail]))
        return _response(status, error_body(code, exc.message, exc.field))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{**e, "loc": _strip_location(tuple(e.get("loc", ())))} for e in exc.errors()]
        return _validation_response(field_errors(_Wrapped(errs)))

    @app.exception_handler(ValidationError)
    async def _model_validation(_: Request, exc: ValidationError) -> JSONResponse:
        return _validation_response(field_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return _response(405, error_body("method_not_allowed", f"{request.method} is not allowed here"),
                             headers={"Allow": ", ".join(_allowed_methods(request))})
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large",
                 416: "range_not_satisfiable"}
        return _response(exc.status_code, error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                         headers=exc.headers)  # a 405 keeps its Allow

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        reason = unavailable_reason(exc)
        if reason is not None:
            log.warning("database unavailable: %s", exc)
            return _response(503, error_body("database_unavailable", reason))
        log.exception("unhandled error", exc_info=exc)
        return _response(500, error_body("internal", "internal error"))
