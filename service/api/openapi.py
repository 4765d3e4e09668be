"""Every status each operation can answer, in the OpenAPI, derived in one place.

FastAPI documents a route's success status and a 422. The server sends more: the request guard (guard.py)
answers 401 and 413 in front of every route, the error mapping (errors.py) turns domain errors into 404, 409,
416, 503 and anything unexpected into 500, and a method a path does not take is a 405. This module adds them to
the generated document, each with the shared error schema (`ErrorBody`, service/core/schemas.py), from:

- the guard's own rules: every path but the public ones (health, dashboard page and assets) needs a token
  (401; 503 when the database behind the token check is down); every body is size-limited (413), time-limited
  (408) and, as JSON, depth-limited (422), and every request's path, query and headers are bounded (414, 431;
  400 for a Content-Length that is not a number), on every path;
- the operation itself: path parameters (404), a JSON body (400: unreadable);
- the role the route needs (its `dependencies`, service/api/deps.py): a route above `viewer` answers 403 to a
  token below its role;
- `ROUTE_STATUSES`, the few statuses only some routes answer (409s, the idempotent 200s, 206 / 416, a `project`
  that is not there for the token: 404).

Routes carry no per-route copies of these.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from service.api.deps import required_role
from service.api.guard import PUBLIC_PATHS, PUBLIC_PREFIXES, UPLOAD_PATHS
from service.core.access import Role
from service.core.schemas import ErrorBody

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_REF = "#/components/schemas/ErrorBody"
SECURITY_SCHEME = "HTTPBearer"


@dataclass(frozen=True)
class Extra:
    """A status only some operations answer. `success`: its body is that of the operation's own success answer
    (a replayed POST, a partial download); otherwise it is an `ErrorBody`."""

    description: str
    kind: Literal["error", "success"] = "error"


_STATE_CONFLICT = Extra("The study's state does not allow this change (e.g. resume a completed study).")
_NO_PROJECT = Extra("The `project` named does not exist for the token: there is no such project, or it is not "
                    "the token's own (only an admin names another project).")

ROUTE_STATUSES: dict[tuple[str, str], dict[int, Extra]] = {
    ("GET", "/readyz"): {503: Extra("The database cannot be reached.")},
    ("POST", "/v1/studies"): {
        200: Extra("The same body with the same Idempotency-Key was submitted before: that study, unchanged.",
                   "success"),
        404: _NO_PROJECT,
        409: Extra("The Idempotency-Key was already used with a different study body."),
    },
    ("POST", "/v1/studies/{study_id}/pause"): {409: _STATE_CONFLICT},
    ("POST", "/v1/studies/{study_id}/resume"): {409: _STATE_CONFLICT},
    ("POST", "/v1/studies/{study_id}/stop"): {409: _STATE_CONFLICT},
    ("POST", "/v1/studies/{study_id}/extend"): {409: Extra(
        "The study cannot be extended: it failed, or its timeout_seconds has passed since it started.")},
    ("POST", "/v1/datasets"): {
        200: Extra("These bytes were uploaded before: the existing data set (same id, one copy).", "success"),
        404: _NO_PROJECT,
        409: Extra("These bytes are already a data set read with other options (format, task, columns)."),
    },
    ("DELETE", "/v1/datasets/{dataset_id}"): {409: Extra("A study references the data set.")},
    ("POST", "/v1/tokens"): {404: Extra("No project of that name.")},
    ("DELETE", "/v1/tokens/{token_id}"): {409: Extra(
        "The last live admin token: create another admin token before revoking it.")},
    ("POST", "/v1/projects"): {409: Extra("A project of that name exists.")},
    **{(method, path): {
        206: Extra("The requested byte range (`Content-Range` says which).", "success"),
        416: Extra("The Range does not overlap the checkpoint."),
    } for method in ("GET", "HEAD")
        for path in ("/v1/studies/{study_id}/best-checkpoint", "/v1/studies/{study_id}/trials/{number}/checkpoint")},
}

_DESCRIPTIONS = {
    400: "The request could not be read (a JSON body that is not UTF-8, a Content-Length that is not a number); "
         "`field` names the header when it is one.",
    408: "The request body stalled longer than STSWEEP_BODY_TIMEOUT_SECONDS between two parts; the connection is "
         "closed.",
    414: "A path segment, the path, the query string or a query parameter is over its bound; `field` names it.",
    431: "Too many headers, or a header over its bound; `field` names it.",
    401: "No token, or not a valid one. Checked before anything else about the request (body, path ids).",
    404: "No such resource (an id not shaped like one is simply not found, and so is another project's); "
         "`field` names the id.",
    405: "A method this path does not take; `Allow` lists those it does.",
    413: "The request body is over STSWEEP_MAX_JSON_BODY_BYTES (the limit is in the message); the server stops "
         "reading and closes the connection.",
    422: "A parameter, header or body value is wrong; `field` names it, `details` lists every one. (The guard "
         "refuses a JSON body nested too deep on every path, before any route reads it.)",
    500: "An unexpected error (nothing about it is shown); the connection is closed.",
    503: "The database (`database_unavailable`) or the artifact store (`storage_unavailable`) cannot be "
         "reached; try again.",
}
_UPLOAD_413 = ("The upload is over STSWEEP_MAX_UPLOAD_BYTES, or decodes past a limit on rows, columns, cell or "
               "decoded size (the limit is in the message); the server stops reading and closes the connection.")

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "description": "`Bearer`", "schema": {"type": "string"}}},
    405: {"Allow": {"required": True, "description": "the methods this path takes",
                    "schema": {"type": "string"}}},
    408: {"Connection": {"description": "`close`", "schema": {"type": "string"}}},
    413: {"Connection": {"description": "`close`", "schema": {"type": "string"}}},
    500: {"Connection": {"description": "`close`", "schema": {"type": "string"}}},
}


def is_guarded(path: str) -> bool:
    """Whether the request guard asks a token for this path (the API docs are not operations)."""
    return not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def _forbidden(role: Role) -> str:
    return (f"The token's role is below {role}, which this operation needs (`forbidden`, field `role`; the "
            "message names both roles). Checked before anything the request names is looked at.")


def operation_statuses(method: str, path: str, operation: dict[str, Any], role: Role | None = None
                       ) -> dict[int, str]:
    """Every error status `operation` can answer besides its own success, with a description; the success
    statuses of `ROUTE_STATUSES` too. `role`: the one the route needs (a 403 below it)."""
    params = operation.get("parameters", [])
    out: dict[int, str] = {status: _DESCRIPTIONS[status] for status in (400, 405, 408, 414, 422, 431, 500)}
    out[413] = _UPLOAD_413 if path in UPLOAD_PATHS else _DESCRIPTIONS[413]
    if is_guarded(path):
        out[401] = _DESCRIPTIONS[401]
        out[503] = _DESCRIPTIONS[503]
    if role is not None and role != "viewer":  # the lowest role: nobody is below it
        out[403] = _forbidden(role)
    if any(p.get("in") == "path" for p in params):
        out[404] = _DESCRIPTIONS[404]
    for status, extra in ROUTE_STATUSES.get((method.upper(), path), {}).items():
        out[status] = extra.description
    return dict(sorted(out.items()))


def _success_response(operation: dict[str, Any]) -> dict[str, Any]:
    codes = sorted(c for c in operation.get("responses", {}) if c.isdigit() and c.startswith("2"))
    if not codes:
        raise ValueError(f"operation {operation.get('operationId')} documents no success status")
    return operation["responses"][codes[0]]


def _error_response(status: int, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}
    if status in _HEADERS:
        response["headers"] = copy.deepcopy(_HEADERS[status])
    return response


def _add_error_schema(doc: dict[str, Any]) -> None:
    schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["ErrorBody"] = schema


def _drop_unused_schemas(doc: dict[str, Any], names: tuple[str, ...]) -> None:
    """FastAPI's own 422 schemas, once nothing refers to them any more."""
    schemas = doc.get("components", {}).get("schemas", {})
    dropped = True
    while dropped:
        dropped = False
        for name in [n for n in names if n in schemas]:
            others = {k: v for k, v in schemas.items() if k != name}
            if f'"#/components/schemas/{name}"' not in json.dumps([doc.get("paths", {}), others]):
                del schemas[name]
                dropped = True


def route_roles(app: FastAPI) -> dict[tuple[str, str], Role]:
    """(METHOD, path) -> the role each route states in its `dependencies` (routes that state none are left
    out: the public ones)."""
    roles: dict[tuple[str, str], Role] = {}
    for route in iter_route_contexts(app.router.routes):
        role = required_role(getattr(route, "dependencies", None) or [])
        if role is not None and route.path:
            roles.update({(method, route.path): role for method in route.methods or ()})
    return roles


def with_every_status(source: dict[str, Any], roles: dict[tuple[str, str], Role] | None = None
                      ) -> dict[str, Any]:
    """A copy of FastAPI's document with every status each operation can answer (`roles`: `route_roles`)."""
    doc = copy.deepcopy(source)
    _add_error_schema(doc)
    seen: set[tuple[str, str]] = set()
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            seen.add((method.upper(), path))
            responses = operation.setdefault("responses", {})
            success = _success_response(operation)
            extras = ROUTE_STATUSES.get((method.upper(), path), {})
            role = (roles or {}).get((method.upper(), path))
            for status, description in operation_statuses(method, path, operation, role).items():
                extra = extras.get(status)
                if extra is not None and extra.kind == "success":
                    responses[str(status)] = {**copy.deepcopy(success), "description": description}
                else:
                    responses[str(status)] = _error_response(status, description)
            operation["responses"] = dict(sorted(responses.items()))
            if role is not None:
                operation["x-role"] = role  # the least role that may call it (README, "Teams")
            if is_guarded(path):
                operation["security"] = [{SECURITY_SCHEME: []}]
                doc["components"].setdefault("securitySchemes", {}).setdefault(
                    SECURITY_SCHEME, {"type": "http", "scheme": "bearer"})
    missing = set(ROUTE_STATUSES) - seen
    if missing:
        raise ValueError(f"ROUTE_STATUSES names operations the app does not have: {sorted(missing)}")
    _drop_unused_schemas(doc, ("HTTPValidationError", "ValidationError"))
    return doc


def install(app: FastAPI) -> None:
    """Serve `with_every_status` of FastAPI's document at /openapi.json (rebuilt when the routes change). Call
    after every router is included."""
    generate = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        source = generate()  # FastAPI's own, cached until the routes change
        if cache.get("source") is not source:
            cache["doc"] = with_every_status(source, route_roles(app))
            cache["source"] = source
        doc: dict[str, Any] = cache["doc"]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
