"""The request guard, in front of every route (a plain ASGI middleware, so it runs before FastAPI parses a body
or validates a path):

1. Auth first: every path but health, the dashboard page and its assets (and the API docs, unless
   STSWEEP_DOCS_NEED_TOKEN) needs a valid bearer token, whatever the method, path or body. Without one the answer
   is 401, and nothing else about the request is looked at.
2. Bounded bodies: a request body over STSWEEP_MAX_JSON_BODY_BYTES is refused with 413 (the limit in the
   message) and the connection is closed without reading the rest. Data set uploads have their own, larger
   limit, enforced while they stream (STSWEEP_MAX_UPLOAD_BYTES).
3. Headers on every answer: Content-Security-Policy (no inline script, no framing), nosniff, X-Frame-Options.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.context import Context
from service.core.errors import DatabaseUnavailable, Unauthorized
from service.store.tokens import verify_token

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
UPLOAD_PATHS = frozenset({"/v1/datasets"})

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# Swagger UI and ReDoc need their inline bootstrap script and their CDN assets.
DOCS_CSP = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


def error_message(status: int, code: str, message: str, *, close: bool = False,
                  extra: list[tuple[bytes, bytes]] | None = None) -> tuple[Message, Message]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
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
            receive = await self._bounded(receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
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

    async def _bounded(self, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body (at most max_body bytes) and replay it to the app; None when it was too large
        (the 413 is already sent)."""
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
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)

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
