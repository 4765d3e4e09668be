"""Bounds on the parts of a request a route may parse, checked by the request guard (api/guard.py) before
anything else looks at them: auth, routing, FastAPI's parameter parsing, the routes' own header parsing.

- the request target: the path (MAX_PATH_BYTES), each path segment (MAX_SEGMENT_BYTES), the query string
  (MAX_QUERY_BYTES), the number of query parameters (MAX_QUERY_PARAMS) and each one, name and value once
  decoded (MAX_PARAM_BYTES): 414, naming the path parameter (from the route templates) or query parameter;
- the headers: how many (MAX_HEADERS) and each one's size (MAX_HEADER_BYTES, smaller for the typed ones in
  TYPED_HEADERS): 431 naming the header; a Content-Length that is not 1-20 digits is a 400 naming it.

Numbers are never converted past these bounds, so Python's 4,300-digit int() limit is never reached.
uvicorn's h11 parser already refuses a request line plus headers over 16 KiB with a 400.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_PATH_BYTES = 2048
MAX_SEGMENT_BYTES = 512
MAX_QUERY_BYTES = 12 * 1024
MAX_QUERY_PARAMS = 64
MAX_PARAM_BYTES = 8 * 1024
MAX_HEADERS = 64
MAX_HEADER_BYTES = 8 * 1024
MAX_CONTENT_LENGTH_DIGITS = 20
TYPED_HEADERS: dict[bytes, int] = {  # the headers something parses into a value, and their bounds in bytes
    b"authorization": 1024,
    b"content-length": MAX_CONTENT_LENGTH_DIGITS,
    b"content-type": 1024,
    b"content-encoding": 256,
    b"transfer-encoding": 256,
    b"idempotency-key": 1024,  # the route allows 200 characters (a 422 naming it past that)
    b"range": 256,
    b"if-range": 256,
    b"accept-encoding": 1024,
}


@dataclass(frozen=True)
class OutOfBounds:
    """One part of the request over its bound: the status, the part's name and why."""

    status: int
    field: str
    message: str


def check_request(path: str, raw_path: bytes, query_string: bytes, headers: Iterable[tuple[bytes, bytes]],
                  templates: Callable[[], Iterable[str]] = tuple) -> OutOfBounds | None:
    """The first part of the request over its bound, or None. `templates` gives the routes' path templates
    (``/v1/tokens/{token_id}``), to name a path segment after its parameter (asked only then)."""
    return (_check_headers(list(headers)) or _check_path(path, raw_path, templates)
            or _check_query(query_string))


def _check_path(path: str, raw_path: bytes, templates: Callable[[], Iterable[str]]) -> OutOfBounds | None:
    segments = path.split("/")
    for index, segment in enumerate(segments):
        size = len(segment.encode("utf-8", "surrogatepass"))
        if size > MAX_SEGMENT_BYTES:
            name = _segment_name(segments, index, list(templates()))
            return OutOfBounds(414, name, f"{name} is {size:,} bytes long; the limit for one path segment is "
                                          f"{MAX_SEGMENT_BYTES:,}")
    if len(raw_path) > MAX_PATH_BYTES or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return OutOfBounds(414, "path", f"the path is {len(raw_path):,} bytes long; the limit is {MAX_PATH_BYTES:,}")
    return None


def _segment_name(segments: list[str], index: int, templates: list[str]) -> str:
    """The path parameter a segment fills in the first route template of the same shape, else `path`."""
    for template in templates:
        parts = template.split("/")
        if len(parts) != len(segments):
            continue
        if all(p == s or _is_parameter(p) for p, s in zip(parts, segments)) and _is_parameter(parts[index]):
            return parts[index][1:-1].split(":")[0]
    return "path"


def _is_parameter(part: str) -> bool:
    return part.startswith("{") and part.endswith("}")


def _check_query(query_string: bytes) -> OutOfBounds | None:
    if len(query_string) > MAX_QUERY_BYTES:
        return OutOfBounds(414, "query", f"the query string is {len(query_string):,} bytes long; the limit is "
                                         f"{MAX_QUERY_BYTES:,}")
    if query_string.count(b"&") + query_string.count(b";") >= MAX_QUERY_PARAMS:
        return OutOfBounds(414, "query", f"the query string has more than {MAX_QUERY_PARAMS} parameters")
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8",
                      errors="surrogateescape")
    if len(pairs) > MAX_QUERY_PARAMS:
        return OutOfBounds(414, "query", f"the query string has {len(pairs)} parameters; the limit is "
                                         f"{MAX_QUERY_PARAMS}")
    for name, value in pairs:
        size = len(name.encode("utf-8", "surrogateescape")) + len(value.encode("utf-8", "surrogateescape"))
        if size > MAX_PARAM_BYTES:
            shown = _shown(name)
            return OutOfBounds(414, shown, f"query parameter {shown} is {size:,} bytes long; the limit is "
                                           f"{MAX_PARAM_BYTES:,}")
    return None


def _check_headers(headers: list[tuple[bytes, bytes]]) -> OutOfBounds | None:
    if len(headers) > MAX_HEADERS:
        return OutOfBounds(431, "headers", f"the request has {len(headers)} headers; the limit is {MAX_HEADERS}")
    for raw_name, value in headers:
        name = raw_name.lower()
        shown = _shown(name.decode("latin-1"), title=True)
        limit = TYPED_HEADERS.get(name, MAX_HEADER_BYTES)
        if len(name) + len(value) > MAX_HEADER_BYTES or len(value) > limit:
            return OutOfBounds(431, shown, f"the {shown} header is {len(value):,} bytes long; the limit is "
                                           f"{min(limit, MAX_HEADER_BYTES):,}")
        if name == b"content-length" and not (value.strip().isdigit() and value.strip().isascii()):
            return OutOfBounds(400, shown, "the Content-Length header must be a number of bytes (digits only)")
    return None


def _shown(name: str, *, title: bool = False) -> str:
    """A parameter or header name for a message and an error's `field`: printable, at most 64 characters."""
    clean = "".join(c if c.isprintable() and c.isascii() else "?" for c in name[:64])
    return "-".join(part.capitalize() for part in clean.split("-")) if title else clean
