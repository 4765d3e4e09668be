"""A hand-made list of hostile requests, as data: what the API must answer without a 5xx and without hanging,
whatever else it does (tests/test_hostile.py sends all of it to one live server). The categories of issue 18:
request parts past their bounds or not parsing (path and query parameters, headers), bodies past their limits
or framed oddly (chunked, multipart parts, preambles, epilogues), body encodings (UTF-16/32 with and without a
BOM, invalid and overlong UTF-8, lone surrogates, NaN and huge or tiny numbers in every numeric field of a
study, deep nesting, duplicate and huge keys), Content-Type and Content-Encoding lies, hostile multipart forms,
and Parquet files with values past Python's datetime range.

`TOKEN` in a path or header is replaced by a valid token, `STUDY` by the id of a real study, when sent.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.studyspecs import contract_study

CLIENT_ERROR = frozenset({4})
ANY_ANSWER = frozenset({2, 4})  # accepted or refused, never a 5xx
DIGITS = "9" * 5000
MiB = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    name: str
    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    ok: frozenset[int] = CLIENT_ERROR  # acceptable status classes (2 = 2xx, 4 = 4xx)
    chunked: bool = False  # send the body as Transfer-Encoding: chunked (no Content-Length)
    auth: bool = True  # send a valid bearer token


JSON = ((b"content-type", b"application/json"),)
BOUNDARY = b"hostileboundary"
MULTIPART = ((b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),)


def _study_text(**overrides: Any) -> str:
    return json.dumps(contract_study(**overrides))


def _numeric_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _numeric_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _numeric_paths(child, (*path, index))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path


def _with_literal(path: tuple[Any, ...], literal: str) -> bytes:
    """A valid study body whose number at `path` is written as the raw JSON text `literal`."""
    body: Any = contract_study()
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "@@NUMBER@@"
    return json.dumps(body).replace('"@@NUMBER@@"', literal).encode()


NUMBERS = {"1e400": CLIENT_ERROR, DIGITS: CLIENT_ERROR, "-" + DIGITS: CLIENT_ERROR, "-0": ANY_ANSWER,
           "1e-400": ANY_ANSWER, "NaN": CLIENT_ERROR, "Infinity": CLIENT_ERROR, "-Infinity": CLIENT_ERROR,
           "0." + "0" * 5000 + "1": ANY_ANSWER, "1" + "0" * 400 + ".0": CLIENT_ERROR}


def _numbers() -> Iterator[Hostile]:
    for path in _numeric_paths(contract_study()):
        for literal, ok in NUMBERS.items():
            shown = literal if len(literal) < 12 else f"{literal[:6]}...({len(literal)} chars)"
            yield Hostile(f"study {'.'.join(map(str, path))} = {shown}", "POST", "/v1/studies", JSON,
                          _with_literal(path, literal), ok)


def _encodings() -> Iterator[Hostile]:
    text = _study_text(name="encoded")
    for codec, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-32-le", b"\xff\xfe\x00\x00"),
                       ("utf-32-be", b"\x00\x00\xfe\xff")):
        yield Hostile(f"study in {codec} without a BOM", "POST", "/v1/studies", JSON, text.encode(codec), ANY_ANSWER)
        yield Hostile(f"study in {codec} with a BOM", "POST", "/v1/studies", JSON, bom + text.encode(codec),
                      ANY_ANSWER)
    yield Hostile("study in UTF-8 with a BOM", "POST", "/v1/studies", JSON, b"\xef\xbb\xbf" + text.encode(),
                  ANY_ANSWER)
    for label, raw in (("invalid UTF-8", b"\xff\xfe\xfd"), ("overlong UTF-8 '/'", b"\xc0\xaf"),
                       ("overlong UTF-8 NUL", b"\xc0\x80"), ("UTF-8 surrogate bytes", b"\xed\xa0\x80"),
                       ("truncated UTF-8", b"\xe2\x82")):
        yield Hostile(f"study name in {label}", "POST", "/v1/studies", JSON,
                      _study_text(name="@@").encode().replace(b"@@", raw))
    for escape in ("\\ud800", "\\udfff", "\\ud800\\u0041", "\\u0000"):
        yield Hostile(f"study name with {escape}", "POST", "/v1/studies", JSON,
                      _study_text(name="@@").encode().replace(b"@@", escape.encode()))
        yield Hostile(f"study key with {escape}", "POST", "/v1/studies", JSON,
                      _study_text().encode().replace(b'"name"', b'"' + escape.encode() + b'"', 1))
    yield Hostile("deep nesting 100,000", "POST", "/v1/studies", JSON, b"[" * 100_000 + b"]" * 100_000)
    yield Hostile("deep objects", "POST", "/v1/studies", JSON, b'{"a":' * 5000 + b"1" + b"}" * 5000)
    yield Hostile("unclosed nesting", "POST", "/v1/studies", JSON, b"[" * 500_000)
    yield Hostile("duplicate keys", "POST", "/v1/studies", JSON,
                  b'{"name": "a", "name": "b", ' + _study_text().encode()[1:], ANY_ANSWER)
    yield Hostile("a 500 KB key", "POST", "/v1/studies", JSON,
                  b'{"' + b"k" * 500_000 + b'": 1, ' + _study_text().encode()[1:])
    yield Hostile("10,000 keys", "POST", "/v1/studies", JSON,
                  b"{" + b", ".join(b'"k%d": 1' % i for i in range(10_000)) + b", " + _study_text().encode()[1:])
    yield Hostile("not JSON", "POST", "/v1/studies", JSON, b"{not json")
    yield Hostile("empty body", "POST", "/v1/studies", JSON, b"")
    yield Hostile("a JSON string", "POST", "/v1/studies", JSON, b'"' + b"x" * 100_000 + b'"')
    yield Hostile("NUL bytes", "POST", "/v1/studies", JSON, b"\x00" * 1000)


def _content_lies() -> Iterator[Hostile]:
    study = _study_text().encode()
    for kind in (b"text/plain", b"application/x-www-form-urlencoded", b"application/xml", b"image/png",
                 b"application/json; charset=utf-32", b"application/json; charset=nope", b"application/vnd.x+json",
                 b"multipart/form-data", b"multipart/form-data; boundary=" + BOUNDARY, b";;;", b"\xff\xfe"):
        yield Hostile(f"study sent as {kind[:40]!r}", "POST", "/v1/studies", ((b"content-type", kind),), study,
                      ANY_ANSWER)
    packed = gzip.compress(study)
    yield Hostile("gzip study with Content-Encoding", "POST", "/v1/studies",
                  JSON + ((b"content-encoding", b"gzip"),), packed, ANY_ANSWER)
    yield Hostile("gzip bomb with Content-Encoding", "POST", "/v1/studies",
                  JSON + ((b"content-encoding", b"gzip"),), gzip.compress(b"[" * (50 * MiB)))
    yield Hostile("gzip data set upload", "POST", "/v1/datasets?task=scored_pairs&filename=a.jsonl",
                  ((b"content-type", b"application/octet-stream"), (b"content-encoding", b"gzip")),
                  gzip.compress(b'{"sentence1": "a", "sentence2": "b", "score": 0.5}\n' * 10))
    yield Hostile("Content-Encoding br, deflate, unknown", "POST", "/v1/studies",
                  JSON + ((b"content-encoding", b"br, deflate, x-unknown"),), study, ANY_ANSWER)


def _part(headers: bytes, payload: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + payload + b"\r\n"


def _form(*parts: bytes, end: bytes = b"--" + BOUNDARY + b"--\r\n") -> bytes:
    return b"".join(parts) + end


ROWS = b"".join(json.dumps({"sentence1": f"a {i}", "sentence2": f"b {i}", "score": 0.5}).encode() + b"\n"
                for i in range(10))
TASK = _part(b'Content-Disposition: form-data; name="task"', b"scored_pairs")


def _file(filename: bytes, payload: bytes = ROWS) -> bytes:
    return _part(b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"', payload)


def _multipart() -> Iterator[Hostile]:
    upload = "/v1/datasets"
    yield Hostile("multipart without a boundary", "POST", upload, ((b"content-type", b"multipart/form-data"),),
                  _form(TASK, _file(b"a.jsonl")))
    yield Hostile("multipart with an empty boundary", "POST", upload,
                  ((b"content-type", b"multipart/form-data; boundary="),), _form(TASK, _file(b"a.jsonl")))
    yield Hostile("multipart with a 300-byte boundary", "POST", upload,
                  ((b"content-type", b"multipart/form-data; boundary=" + b"b" * 300),), _form(TASK, _file(b"a.jsonl")))
    yield Hostile("multipart boundary that does not match", "POST", upload,
                  ((b"content-type", b"multipart/form-data; boundary=other"),), _form(TASK, _file(b"a.jsonl")))
    yield Hostile("two file parts", "POST", upload, MULTIPART, _form(TASK, _file(b"a.jsonl"), _file(b"b.jsonl")))
    yield Hostile("two task parts", "POST", upload, MULTIPART, _form(TASK, TASK, _file(b"a.jsonl")), ANY_ANSWER)
    yield Hostile("a 1 MiB part header", "POST", upload, MULTIPART,
                  _form(TASK, _part(b"X-Huge: " + b"h" * MiB, b"x"), _file(b"a.jsonl")))
    yield Hostile("10,000 part headers", "POST", upload, MULTIPART,
                  _form(TASK, _part(b"\r\n".join(b"X-%d: 1" % i for i in range(10_000)), b"x"), _file(b"a.jsonl")))
    for name in (b"../../etc/passwd.jsonl", b"a\x00.jsonl", b"/abs/path.jsonl", b"..\\..\\win.jsonl",
                 b"\xff\xfe.jsonl", b"x" * 5000 + b".jsonl", b"%2e%2e%2fa.jsonl", b""):
        yield Hostile(f"file named {name[:30]!r}", "POST", upload, MULTIPART, _form(TASK, _file(name)), ANY_ANSWER)
    yield Hostile("no closing boundary", "POST", upload, MULTIPART, _form(TASK, _file(b"a.jsonl"), end=b""))
    yield Hostile("only a closing boundary", "POST", upload, MULTIPART, b"--" + BOUNDARY + b"--\r\n")
    yield Hostile("a field of 100 KB", "POST", upload, MULTIPART,
                  _form(_part(b'Content-Disposition: form-data; name="columns"', b"{" * 100_000), _file(b"a.jsonl")))
    yield Hostile("task field in UTF-16", "POST", upload, MULTIPART,
                  _form(_part(b'Content-Disposition: form-data; name="task"', "scored_pairs".encode("utf-16")),
                        _file(b"a.jsonl")))
    yield Hostile("a 3 MiB epilogue, chunked", "POST", upload, MULTIPART,
                  _form(TASK, _file(b"a.jsonl")) + b"e" * (3 * MiB), ANY_ANSWER, chunked=True)
    yield Hostile("a 3 MiB non-file part, chunked", "POST", upload, MULTIPART,
                  _form(TASK, _part(b'Content-Disposition: form-data; name="junk"', b"j" * (3 * MiB)),
                        _file(b"a.jsonl")), ANY_ANSWER, chunked=True)


def _parquet(array: pa.Array) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.1, 0.2], "x": array}),
                   out)
    return out.getvalue()


def _parquet_files() -> Iterator[Hostile]:
    far = {"timestamp[ms]": pa.array([0, 2**62], pa.timestamp("ms")),
           "timestamp[us, tz]": pa.array([0, 2**62], pa.timestamp("us", "Asia/Kolkata")),
           "date32": pa.array([0, 2**31 - 1], pa.date32()), "duration[s]": pa.array([0, 2**62], pa.duration("s")),
           "list of date32": pa.array([[2**31 - 1], []], pa.list_(pa.date32()))}
    for kind, array in far.items():
        data = _parquet(array)
        for columns in ("", "&columns=" + '{"score":"x"}', "&columns=" + '{"sentence1":"x"}'):
            yield Hostile(f"parquet with far {kind} {columns}", "POST",
                          f"/v1/datasets?task=scored_pairs&filename=a.parquet{columns}",
                          ((b"content-type", b"application/octet-stream"),), data, ANY_ANSWER)


def _request_parts() -> Iterator[Hostile]:
    for path in (f"/v1/tokens/{DIGITS}", f"/v1/studies/{DIGITS}", f"/v1/studies/STUDY/trials/{DIGITS}",
                 f"/v1/studies/STUDY/trials/{DIGITS}/checkpoint", f"/v1/datasets/{DIGITS}", "/v1/" + "a/" * 2000,
                 "/v1/studies/%00", "/v1/studies/%ff%fe", "/v1/studies/..%2f..%2fetc%2fpasswd",
                 f"/v1/studies?limit={DIGITS}", f"/v1/studies?offset={DIGITS}", "/v1/studies?limit=-1",
                 "/v1/studies?limit=1e400", "/v1/studies?status=%00", "/v1/studies?" + "&".join(["a=1"] * 500),
                 f"/v1/studies/STUDY/changes?cursor={DIGITS}", "/v1/studies/STUDY/changes?cursor=-0",
                 "/v1/studies/STUDY/trials?sort=%ff&order=%00", f"/v1/studies/STUDY/trials?state={DIGITS}",
                 "/v1/datasets?offset=%ef%bf%bd", "/v1/studies?x=" + "%" * 3000):
        yield Hostile(f"GET {path[:60]}", "GET" if "tokens" not in path else "DELETE", path, ok=CLIENT_ERROR
                      if any(s in path for s in (DIGITS, "a/a/", "-1", "1e400", "%00", "&a=1", "%ff", "%ef", ".."))
                      else ANY_ANSWER)  # (an unknown query parameter is ignored, whatever it holds)
    checkpoint = "/v1/studies/STUDY/best-checkpoint"
    for value in (b"bytes=" + DIGITS.encode() + b"-", b"bytes=-" + DIGITS.encode(), b"bytes=0-" + DIGITS.encode(),
                  b"bytes=" + b"9" * 200 + b"-", b"bytes=-" + b"9" * 200, b"bytes=1-0", b"bytes=0-1,2-3",
                  b"bytes=\xff-", b"chars=0-1"):
        yield Hostile(f"Range {value[:30]!r}", "GET", checkpoint, ((b"range", value),))
        yield Hostile(f"If-Range with Range {value[:30]!r}", "GET", checkpoint,
                      ((b"range", value), (b"if-range", value)))
    for name in (b"authorization", b"idempotency-key", b"content-type", b"accept-encoding", b"x-anything"):
        for value in (DIGITS.encode(), b"\xff\xfe\xe9", b"%ff%00", b"-1", b"1e400"):
            # Past the bound of a header something parses, or a bad token: refused. An unknown header is ignored.
            ok = (CLIENT_ERROR if name == b"authorization" or (value == DIGITS.encode() and name != b"x-anything")
                  else ANY_ANSWER)
            yield Hostile(f"header {name.decode()}: {value[:12]!r}", "POST", "/v1/studies",
                          JSON + ((name, value),) if name != b"content-type" else ((name, value),),
                          _study_text(name="hdr").encode(), ok, auth=name != b"authorization")
    yield Hostile("Content-Length with 5000 digits", "POST", "/v1/studies",
                  JSON + ((b"content-length", DIGITS.encode()),))
    yield Hostile("Content-Length -1", "POST", "/v1/studies", JSON + ((b"content-length", b"-1"),))
    yield Hostile("Content-Length 1e3", "POST", "/v1/studies", JSON + ((b"content-length", b"1e3"),))
    yield Hostile("two Content-Lengths", "POST", "/v1/studies",
                  JSON + ((b"content-length", b"2"), (b"content-length", b"3")), b"{}")
    yield Hostile("Transfer-Encoding gzip", "POST", "/v1/studies", JSON + ((b"transfer-encoding", b"gzip"),))
    yield Hostile("100 headers", "GET", "/v1/studies", tuple((b"x-h%d" % i, b"1") for i in range(100)))
    yield Hostile("a NUL in a header", "GET", "/v1/studies", ((b"x-nul", b"a\x00b"),))
    yield Hostile("no token, huge body", "POST", "/v1/studies", JSON, b"x" * (5 * MiB), auth=False)


def _bodies() -> Iterator[Hostile]:
    yield Hostile("chunked JSON over the limit", "POST", "/v1/studies", JSON, b"[" + b"1," * MiB + b"1]",
                  chunked=True)
    yield Hostile("JSON over the limit with its length", "POST", "/v1/studies", JSON,
                  b'{"name": "' + b"x" * (2 * MiB) + b'"}')
    yield Hostile("a body on a GET", "GET", "/v1/studies", JSON, b"x" * (2 * MiB))
    yield Hostile("a chunked body on a DELETE", "DELETE", "/v1/studies/STUDY/nothing", JSON, b"{}" * 1000,
                  chunked=True)


def hostile_requests() -> list[Hostile]:
    return [*_request_parts(), *_numbers(), *_encodings(), *_content_lies(), *_multipart(), *_parquet_files(),
            *_bodies()]
