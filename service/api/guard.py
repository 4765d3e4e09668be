"""The request guard, in front of every route (a plain ASGI middleware, so it runs before FastAPI parses a body
or validates a path):

1. Auth first: every path but health, the dashboard page and its assets (and the API docs, unless
   STSWEEP_DOCS_NEED_TOKEN; and /metrics, unless STSWEEP_METRICS_NEED_TOKEN) needs a valid bearer token, whatever
   the method, path or body. Without one the answer is 401, and nothing else about the request is looked at.
2. Bounded bodies: a request body over STSWEEP_MAX_JSON_BODY_BYTES is refused with 413 (the limit in the
   message) and the connection is closed without reading the rest. Data set uploads have their own, larger
   limit, enforced while they stream (STSWEEP_MAX_UPLOAD_BYTES).
   A JSON body (or one without a Content-Type, which FastAPI parses as JSON too) nested deeper than
   body_limits.MAX_DEPTH is a 422 naming where it got too deep, found by a scan of the raw text before any parser
   (whose recursion a 100,000-deep body would exhaust) sees it.
3. Headers on every answer: Content-Security-Policy (no inline script, no framing), nosniff, X-Frame-Options.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.context import Context
from service.core.errors import DatabaseUnavailable, Unauthorized
from service.core.body_limits import json_depth_problem
from service.store.tokens import verify_token

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
METRICS_PATH = "/metrics"  # public unless STSWEEP_METRICS_NEED_TOKEN (a Prometheus scraper has no token by default)
UPLOAD_PATHS = frozenset({"/v1/datasets"})

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
        self.docs_need_token = ctx.settings.docs_need_token
        self.metrics_need_token = ctx.settings.metrics_need_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        send = self._with_headers(send, DOCS_CSP if path in DOCS_PATHS else CSP)
        if not self._is_public(path):
            refusal = await self._check_token(scope)
            if refusal is not None:
                await self._answer(send, refusal)
                return
        if path not in UPLOAD_PATHS:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body:
                await self._answer(send, self._too_large())
                return
            receive = await self._bounded(scope, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        if path == METRICS_PATH:
            return not self.metrics_need_token
        return path in DOCS_PATHS and not self.docs_need_token

    async def _check_token(self, scope: Scope) -> tuple[Message, Message] | None:
        token = _bearer(scope)
        try:
            name = await run_in_threadpool(verify_token, self.ctx.sessions, token)
        except Unauthorized as exc:
            return error_message(401, "unauthorized", exc.message, extra=[(b"www-authenticate", b"Bearer")])
        except DatabaseUnavailable as exc:
            return error_message(503, "database_unavailable", exc.message)
        scope.setdefault("state", {})["token_name"] = name
        return None

    def _too_large(self) -> tuple[Message, Message]:
        return error_message(413, "payload_too_large", f"the request body is over the limit of {self.max_body} "
                             "bytes (STSWEEP_MAX_JSON_BODY_BYTES)", close=True)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body (at most max_body bytes) and replay it to the app; None when it was too large
        or, as JSON, too deep (the 413 / 422 is already sent)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay([message], receive)
            size += len(message.get("body", b""))
            if size > self.max_body:
                await self._answer(send, self._too_large())
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _parsed_as_json(scope):
            # A scan of 1 MiB takes tens of milliseconds: off the event loop when the body is large.
            problem = (json_depth_problem(body) if len(body) < 64 * 1024
                       else await run_in_threadpool(json_depth_problem, body))
            if problem is not None:
                field = ".".join(str(part) for part in problem.location) or "body"
                await self._answer(send, invalid_input(field, problem.message))
                return None
        return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)

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
    raw = _header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def token_name(scope: dict[str, Any]) -> str | None:
    """The name of the token the guard verified for this request, if any."""
    state = scope.get("state") or {}
    return state.get("token_name")
