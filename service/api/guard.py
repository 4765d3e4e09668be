"""The request guard, in front of every route (a plain ASGI middleware, so it runs before FastAPI parses a body
or validates a path):

1. Bounded request parts first (api/request_bounds.py): the path and each segment, the query string and each
   parameter, the header count and each header, before anything parses them: 414 / 431 / 400 naming the part.
2. Auth: every path but health, the dashboard page and its assets (and the API docs, unless
   STSWEEP_DOCS_NEED_TOKEN; and /metrics, unless STSWEEP_METRICS_NEED_TOKEN) needs a valid bearer token, whatever
   the method, path or body. Without one the answer is 401, and nothing else about the request is looked at.
   /metrics takes an optional token: one sent (any Authorization header) is verified like anywhere else, and a
   bad one is a 401, never the anonymous answer (only with the database down, when no token can be checked and
   the scrape has nothing but `stsweep_database_up 0` to say, does it go on as anonymous). The verified token is
   in `scope["state"]["principal"]`.
3. Bounded bodies (api/body_meter.py): every byte of every body is counted as it arrives, chunked or not, framing
   included: over STSWEEP_MAX_JSON_BODY_BYTES (data set uploads: STSWEEP_MAX_UPLOAD_BYTES plus
   MULTIPART_ALLOWANCE) is a 413 naming the limit, at once when Content-Length says so; a body that stalls
   longer than STSWEEP_BODY_TIMEOUT_SECONDS between two parts is a 408. Both close the connection. An answer
   sent before the body was read (a 401, a 413, ...) is followed by reading and discarding what the client still
   sends, within body_meter's DRAIN_* bounds, so a client that is still writing reads the answer.
   A JSON body (or one without a Content-Type, which FastAPI parses as JSON too) nested deeper than
   body_limits.MAX_DEPTH is a 422 naming where it got too deep, found by a scan of the raw text before any parser
   (whose recursion a 100,000-deep body would exhaust) sees it.
4. Headers on every answer: Content-Security-Policy (no inline script, no framing), nosniff, X-Frame-Options.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.body_meter import MeteredBody
from service.api.request_bounds import check_request
from service.context import Context
from service.core.access import Principal
from service.core.errors import DatabaseUnavailable, PayloadTooLarge, RequestTimeout, StsweepError, Unauthorized
from service.core.body_limits import json_depth_problem
from service.store.tokens import verify_token

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Public unless STSWEEP_METRICS_NEED_TOKEN (a Prometheus scraper has no token by default); a token sent is checked.
METRICS_PATH = "/metrics"
UPLOAD_PATHS = frozenset({"/v1/datasets"})
MULTIPART_ALLOWANCE = 1024 * 1024  # bytes of multipart framing (boundaries, part headers, fields) past the file

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# Swagger UI and ReDoc need their inline bootstrap script and their CDN assets.
DOCS_CSP = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


def error_message(status: int, code: str, message: str, *, close: bool = False,
                  extra: list[tuple[bytes, bytes]] | None = None,
                  error: dict[str, object] | None = None) -> tuple[Message, Message]:
    """A whole answer in the API's error shape (api/errors.py), for requests refused before any route runs."""
    body = json.dumps({"error": error or {"code": code, "message": message}}).encode()  # ASCII-safe
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": status, "headers": headers + (extra or [])},
            {"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.max_body = ctx.settings.max_json_body_bytes
        self.max_upload = ctx.settings.max_upload_bytes + MULTIPART_ALLOWANCE
        self.body_timeout = ctx.settings.body_timeout_seconds
        self.docs_need_token = ctx.settings.docs_need_token
        self.metrics_need_token = ctx.settings.metrics_need_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        body = self._metered(scope, receive, upload=path in UPLOAD_PATHS)
        send = _draining(self._with_headers(send, DOCS_CSP if path in DOCS_PATHS else CSP), body)
        out_of_bounds = check_request(path, scope.get("raw_path") or path.encode(), scope.get("query_string", b""),
                                      scope.get("headers", []), lambda: _templates(scope))
        if out_of_bounds is not None:
            code = {400: "bad_request", 414: "uri_too_long", 431: "header_too_large"}[out_of_bounds.status]
            await self._answer(send, refused(out_of_bounds.status, code, out_of_bounds.field, out_of_bounds.message))
            return
        public = self._is_public(path)
        optional = public and path == METRICS_PATH and _header(scope, b"authorization") is not None
        if not public or optional:
            refusal = await self._check_token(scope, optional=optional)
            if refusal is not None:
                await self._answer(send, refusal)
                return
        if body.declared is not None and body.declared > body.limit:
            await self._answer(send, self._refusal(PayloadTooLarge(body.too_large(), field="body")))
            return
        if path in UPLOAD_PATHS:  # streamed by the route; the meter raises past the limit or on a stall
            await self.app(scope, body.receive, send)
            return
        replay = await self._bounded(scope, body, send)
        if replay is not None:
            await self.app(scope, replay, send)

    def _metered(self, scope: Scope, receive: Receive, *, upload: bool) -> MeteredBody:
        framing = f"STSWEEP_MAX_UPLOAD_BYTES plus {MULTIPART_ALLOWANCE} bytes of multipart framing"
        limit, setting = ((self.max_upload, framing) if upload
                          else (self.max_body, "STSWEEP_MAX_JSON_BODY_BYTES"))
        return MeteredBody(receive, limit=limit, setting=setting, idle_seconds=self.body_timeout,
                           declared=_content_length(scope), chunked=_header(scope, b"transfer-encoding") is not None)

    @staticmethod
    def _refusal(exc: StsweepError) -> tuple[Message, Message]:
        if isinstance(exc, PayloadTooLarge):
            return refused(413, "payload_too_large", exc.field or "body", exc.message, close=True)
        return refused(408, "request_timeout", exc.field or "body", exc.message, close=True)

    def _is_public(self, path: str) -> bool:
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        if path == METRICS_PATH:
            return not self.metrics_need_token
        return path in DOCS_PATHS and not self.docs_need_token

    async def _check_token(self, scope: Scope, *, optional: bool = False) -> tuple[Message, Message] | None:
        """None when the request may go on (its Principal in the scope's state), else the refusal. `optional`: a
        token the path does not need (public /metrics), which with the database down goes on without one (the
        anonymous scrape then says `stsweep_database_up 0`, as it would to anyone)."""
        token = _bearer(scope)
        try:
            principal = await run_in_threadpool(verify_token, self.ctx.sessions, token)
        except Unauthorized as exc:
            return error_message(401, "unauthorized", exc.message, extra=[(b"www-authenticate", b"Bearer")])
        except DatabaseUnavailable as exc:
            if optional:
                return None
            return error_message(503, "database_unavailable", exc.message)
        scope.setdefault("state", {})["principal"] = principal
        return None

    async def _bounded(self, scope: Scope, body: MeteredBody, send: Send) -> Receive | None:
        """Read the whole body (at most its limit) and replay it to the app; None when it was too large, stalled
        or, as JSON, too deep (the 413 / 408 / 422 is already sent)."""
        chunks: list[bytes] = []
        while True:
            try:
                message = await body.receive()
            except (PayloadTooLarge, RequestTimeout) as exc:
                await self._answer(send, self._refusal(exc))
                return None
            if message["type"] == "http.disconnect":
                return _replay([message], body.receive)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        if raw and _parsed_as_json(scope):
            # A scan of 1 MiB takes tens of milliseconds: off the event loop when the body is large.
            problem = (json_depth_problem(raw) if len(raw) < 64 * 1024
                       else await run_in_threadpool(json_depth_problem, raw))
            if problem is not None:
                field = ".".join(str(part) for part in problem.location) or "body"
                await self._answer(send, invalid_input(field, problem.message))
                return None
        return _replay([{"type": "http.request", "body": raw, "more_body": False}], body.receive)

    @staticmethod
    async def _answer(send: Send, messages: tuple[Message, Message]) -> None:
        for message in messages:
            await send(message)

    @staticmethod
    def _with_headers(send: Send, csp: str) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in [(b"content-security-policy", csp.encode()), *SECURITY_HEADERS]
                            if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        return sending


def refused(status: int, code: str, field: str, message: str, *, close: bool = False) -> tuple[Message, Message]:
    """An answer in the API's error shape naming the part of the request at fault."""
    error = {"code": code, "message": message, "field": field, "details": [{"field": field, "message": message}]}
    return error_message(status, code, message, error=error, close=close)


def _draining(send: Send, body: MeteredBody) -> Send:
    """`send`, but an answer completed before its request body was read is held open while the rest of the body
    is read and discarded (bounded: body_meter.DRAIN_*), so a client still writing reads it rather than a reset.
    A body too large to drain, or one that stalled, is not waited for."""

    async def sending(message: Message) -> None:
        if message["type"] != "http.response.body" or message.get("more_body", False) or not body.worth_draining():
            await send(message)
            return
        await send({**message, "more_body": True})
        await body.drain()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return sending


def _templates(scope: Scope) -> list[str]:
    """The path templates of the app's documented operations (FastAPI puts itself in the scope before any
    middleware runs, and builds its OpenAPI document once)."""
    app = scope.get("app")
    openapi = getattr(app, "openapi", None)
    return list(openapi().get("paths", {})) if callable(openapi) else []


def invalid_input(field: str, message: str) -> tuple[Message, Message]:
    """A 422 in the API's error shape (api/errors.py), for input refused before any route runs."""
    error = {"code": "invalid_input", "message": f"{field}: {message}", "field": field,
             "details": [{"field": field, "message": message}]}
    return error_message(422, "invalid_input", error["message"], error=error)


def _parsed_as_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this body as JSON: no Content-Type, or application/json or .../*+json."""
    raw = _header(scope, b"content-type")
    if not raw:
        return True
    parsed = email.message.Message()  # the parse FastAPI itself uses (fastapi/routing.py)
    parsed["content-type"] = raw
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _replay(messages: list[Message], then: Receive) -> Receive:
    """`messages` first, then the real channel (which tells of a client that goes away)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    raw = _header(scope, b"authorization")
    if not raw:
        return None
    scheme, _, credentials = raw.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _content_length(scope: Scope) -> int | None:
    """The declared length; request_bounds has already refused one that is not 1-20 digits."""
    raw = _header(scope, b"content-length")
    digits = raw.strip() if raw is not None else ""
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 20 else None


def verified_principal(scope: dict[str, Any]) -> Principal | None:
    """The token the guard verified for this request, if any."""
    state = scope.get("state") or {}
    return state.get("principal")
