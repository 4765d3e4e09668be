"""Issue 11, uploaded data: bounded decoding and text checks. One row per bomb kind and format (rows, columns, a
huge cell, a long line, the decoded size, the Parquet metadata, dictionary and footer bombs, deep JSON, NUL,
lone surrogates, bytes that are not UTF-8): each is a 413 or 422 naming the limit or the row and column, and
leaves nothing stored (no data set row, no object in the artifact store, no spool file). At each limit a file
is still accepted. Then the real server (`stsweep serve`, a subprocess) gets every bomb kind over HTTP while its
memory is measured: the peak growth per bomb stays under MEMORY_BOUND_MB (printed as `BOMB kind=...` lines)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.app import create_app
from service.context import Context
from service.core.errors import InvalidInput, PayloadTooLarge
from service.core.limits import EXPANSION_FLOOR, ReadLimits
from service.core.tabular import read_table
from service.core.tasks import TASKS
from service.settings import Settings
from service.store import optuna_bridge
from service.store.db import session_scope
from service.store.tokens import create_token
from tests import pg
from tests.test_install_roles import free_port

HEADER = ["sentence1", "sentence2", "score"]
MiB = 1024 * 1024
MEMORY_BOUND_MB = 150


def rows(n: int, *, width: int = 0) -> list[list[Any]]:
    """n valid scored pairs (scores in the default range 0..1); `width` pads the first sentence."""
    return [[f"a sentence {i}" + "x" * width, f"another one {i}", (i % 10) / 10] for i in range(n)]


# ---------------------------------------------------------------- files in each format


def csv_bytes(data: list[list[Any]], header: list[str] = HEADER, delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n",
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL, escapechar="\\")
    writer.writerow(header)
    writer.writerows(data)
    return out.getvalue().encode("utf-8")


def tsv_bytes(data: list[list[Any]], header: list[str] = HEADER) -> bytes:
    return csv_bytes(data, header, "\t")


def jsonl_bytes(data: list[list[Any]], header: list[str] = HEADER) -> bytes:
    return "".join(json.dumps(dict(zip(header, r))) + "\n" for r in data).encode("utf-8")


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **options)
    return out.getvalue()


def parquet_rows(data: list[list[Any]], header: list[str] = HEADER) -> bytes:
    return parquet_bytes(pa.table({h: [r[i] for r in data] for i, h in enumerate(header)}))


FORMATS: dict[str, Callable[..., bytes]] = {"csv": csv_bytes, "tsv": tsv_bytes, "jsonl": jsonl_bytes,
                                            "parquet": parquet_rows}


def repeated(n: int, size: int) -> pa.Array:
    """n copies of one `size`-byte text, built as a dictionary (so writing it costs no n copies here)."""
    return pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["x" * size]))


def dictionary_bomb() -> bytes:
    """The issue's file: about 26 KB of Parquet (pyarrow's defaults: dictionary pages, snappy) that decodes to
    about 200 MB; its declared sizes are tiny, since dictionary encoding stores the one value once."""
    n = 500_000
    return parquet_bytes(pa.table({"sentence1": repeated(n, 200), "sentence2": repeated(n, 200),
                                   "score": pa.array([0.5] * n)}))


def plain_bomb() -> bytes:
    """Plain (non-dictionary) pages under zstd: about 30 KB that declare 50 MB uncompressed in the metadata."""
    n = 100_000
    return parquet_bytes(pa.table({"sentence1": repeated(n, 250), "sentence2": repeated(n, 250),
                                   "score": pa.array([0.5] * n)}), use_dictionary=False, compression="zstd")


def footer_bomb() -> bytes:
    """A Parquet file whose metadata (schema key-value metadata) is 9 MiB: refused before it is parsed."""
    schema = pa.schema([(h, pa.string()) for h in HEADER[:2]] + [("score", pa.float64())],
                       metadata={b"padding": b"p" * (9 * MiB)})
    return parquet_bytes(pa.table({"sentence1": ["a"], "sentence2": ["b"], "score": [0.5]}, schema=schema))


def bad_text_parquet(value: bytes) -> bytes:
    strings = pa.array([b"fine", b"also fine", value], type=pa.binary()).view(pa.string())
    return parquet_bytes(pa.table({"sentence1": ["a", "b", "c"], "sentence2": strings, "score": [0.1, 0.2, 0.3]}),
                         use_dictionary=False)


def deep_line(depth: int = 100_000) -> str:
    return '{"sentence1": "a", "sentence2": ' + "[" * depth + "]" * depth + ', "score": 0.5}'


def jsonl_lines(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


GOOD_LINE = '{"sentence1": "a", "sentence2": "b", "score": 0.5}'


# ---------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    filename: str
    build: Callable[[], bytes]
    status: int
    fragments: tuple[str, ...]
    limits: dict[str, int] = field(default_factory=dict)  # Settings fields for this upload
    form: dict[str, str] = field(default_factory=dict)
    error_field: str = "file"


SMALL = {"max_rows": 100, "max_columns": 10, "max_cell_bytes": 1000, "max_line_bytes": 4000,
         "max_decoded_bytes": 50_000}


def _per_format() -> list[Case]:
    cases = []
    for fmt, build in FORMATS.items():
        wide = HEADER + [f"extra{i}" for i in range(8)]  # 11 columns
        cases += [
            Case(f"rows-{fmt}", f"d.{fmt}", lambda b=build: b(rows(101)), 413,
                 ("more than 100 rows", "STSWEEP_MAX_ROWS", "101" if fmt == "parquet" else "row 101"), SMALL),
            Case(f"columns-{fmt}", f"d.{fmt}", lambda b=build, w=wide: b([r + ["e"] * 8 for r in rows(3)], w), 422,
                 ("11", "more than 10 columns", "STSWEEP_MAX_COLUMNS"), SMALL),
            Case(f"cell-{fmt}", f"d.{fmt}",
                 lambda b=build: b(rows(2) + [["short", "y" * 1001, 0.5]] + rows(2)), 422,
                 ("row 3", "'sentence2'", "1,001 bytes", "STSWEEP_MAX_CELL_BYTES"), SMALL),
            Case(f"decoded-{fmt}", f"d.{fmt}", lambda b=build: b(rows(99, width=900)), 413,
                 ("more than 50,000 bytes", "STSWEEP_MAX_DECODED_BYTES"), SMALL),
        ]
    return cases


CASES: list[Case] = _per_format() + [
    # lines
    Case("line-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, '{"sentence1": "' + "z" * 5000 + '"}'), 422,
         ("row 2", "longer than 4,000 bytes", "STSWEEP_MAX_LINE_BYTES"), SMALL),
    Case("line-csv", "d.csv", lambda: csv_bytes(rows(2) + [["x" * 900] * 5 + ["0.5"]]), 422,
         ("row 3 (line 4)", "4,000 bytes", "STSWEEP_MAX_LINE_BYTES"), SMALL),
    Case("quoted-field-runs-on-csv", "d.csv", lambda: csv_bytes(rows(2)) + b'"' + b"q\n" * 3000, 422,
         ("row 3", "quoted field", "STSWEEP_MAX_CELL_BYTES"), SMALL),
    # Parquet: from the metadata, from the dictionary, the footer (default limits)
    Case("parquet-metadata-bomb", "bomb.parquet", plain_bomb, 413,
         ("metadata", "declares", "100 times", "STSWEEP_MAX_EXPANSION")),
    Case("parquet-dictionary-bomb", "bomb.parquet", dictionary_bomb, 413,
         ("rows ", "100 times the file's own 26,", "STSWEEP_MAX_EXPANSION")),
    Case("parquet-rows-from-metadata", "bomb.parquet", dictionary_bomb, 413,
         ("declares 500,000 rows", "STSWEEP_MAX_ROWS"), {"max_rows": 1000}),
    Case("parquet-decoded-from-metadata", "bomb.parquet", plain_bomb, 413,
         ("metadata", "STSWEEP_MAX_DECODED_BYTES"), {"max_decoded_bytes": 10 * MiB}),
    Case("parquet-footer-bomb", "bomb.parquet", footer_bomb, 422, ("footer", "more than 8,388,608 bytes")),
    # JSON nesting: checked before json.loads (lines) or with the parse guarded (a JSON array)
    Case("deep-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, deep_line()), 422,
         ("row 2", "nested deeper than 32", "STSWEEP_MAX_JSONL_DEPTH")),
    Case("deep-jsonl-33", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, GOOD_LINE, deep_line(32)), 422,
         ("row 3", "deeper than 32")),
    Case("deep-json-array", "d.json", lambda: ("[" + GOOD_LINE + ", " + deep_line() + "]").encode(), 422,
         ("row 2", "deeper than 32", "STSWEEP_MAX_JSONL_DEPTH")),
    Case("huge-integer-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, '{"score": ' + "9" * 5000 + "}"), 422,
         ("row 2", "not valid JSON")),
    # NUL in a cell and in a header / key / field name
    Case("nul-cell-csv", "d.csv", lambda: csv_bytes(rows(1) + [["a", "b\x00c", 0.5]]), 422,
         ("row 2", "'sentence2'", "NUL")),
    Case("nul-cell-tsv", "d.tsv", lambda: tsv_bytes(rows(1) + [["a", "b\x00c", 0.5]]), 422,
         ("row 2", "'sentence2'", "NUL")),
    Case("nul-cell-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, GOOD_LINE.replace('"b"', '"b\\u0000"')), 422,
         ("row 2", "'sentence2'", "NUL")),
    Case("nul-cell-parquet", "d.parquet", lambda: bad_text_parquet(b"b\x00c"), 422,
         ("row 3", "'sentence2'", "NUL")),
    Case("nul-header-csv", "d.csv", lambda: csv_bytes(rows(2), ["sentence1", "sen\x00tence2", "score"]), 422,
         ("the header, column 2", "NUL")),
    Case("nul-header-tsv", "d.tsv", lambda: tsv_bytes(rows(2), ["sentence1", "sen\x00tence2", "score"]), 422,
         ("the header, column 2", "NUL")),
    Case("nul-key-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, GOOD_LINE.replace('"score"', '"sc\\u0000ore"')),
         422, ("row 2", "key 'sc\\x00ore'", "NUL")),
    Case("nul-field-name-parquet", "d.parquet",
         lambda: parquet_rows(rows(2), ["sentence1", "sen\x00tence2", "score"]), 422, ("column 2", "NUL")),
    # lone surrogates (a JSON escape) and bytes that are not UTF-8
    Case("surrogate-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, GOOD_LINE.replace('"a"', '"a\\ud800"')), 422,
         ("row 2", "'sentence1'", "surrogate (\\ud800)")),
    Case("surrogate-key-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE.replace('"score"', '"\\udfffscore"')), 422,
         ("row 1", "key", "surrogate")),
    Case("surrogate-nested-jsonl", "d.jsonl",
         lambda: jsonl_lines(GOOD_LINE[:-1] + ', "meta": {"tags": ["ok", "\\ud83d"]}}'), 422,
         ("row 1", "'meta'", "surrogate")),
    Case("surrogate-json-array", "d.json", lambda: ("[" + GOOD_LINE.replace('"b"', '"\\udc00"') + "]").encode(),
         422, ("row 1", "'sentence2'", "surrogate")),
    Case("invalid-utf8-csv", "d.csv", lambda: csv_bytes(rows(3)).replace(b"another one 1", b"another \xff\xfe 1"),
         422, ("row 2", "'sentence2'", "not UTF-8")),
    Case("encoded-surrogate-tsv", "d.tsv", lambda: tsv_bytes(rows(3)).replace(b"a sentence 2", b"a \xed\xa0\x80 2"),
         422, ("row 3", "'sentence1'", "not UTF-8 text (byte 0xed")),
    Case("invalid-utf8-header-csv", "d.csv", lambda: csv_bytes(rows(2)).replace(b"sentence2", b"sent\xc3nce2", 1),
         422, ("the header, column 2", "not UTF-8")),
    Case("invalid-utf8-jsonl", "d.jsonl", lambda: jsonl_lines(GOOD_LINE, GOOD_LINE).replace(b'"b"', b'"\xc0\xaf"', 1),
         422, ("row 1", "not UTF-8")),
    Case("invalid-utf8-parquet", "d.parquet", lambda: bad_text_parquet(b"\xe2\x28\xa1"), 422,
         ("row 3", "'sentence2'", "not UTF-8")),
    Case("nul-nested-parquet", "d.parquet", lambda: parquet_rows([r + [["tag", "t\x00g"] if i == 1 else ["ok"]]
                                                                   for i, r in enumerate(rows(3))],
                                                                  HEADER + ["tags"]), 422,
         ("rows 1-3", "'tags'", "nested value", "NUL")),
    # the upload's own fields are text and flat, too
    Case("surrogate-in-columns-field", "d.csv", lambda: csv_bytes(rows(2)), 422, ("surrogate",),
         form={"columns": '{"sentence1": "a\\ud800"}'}, error_field="columns"),
    Case("deep-columns-field", "d.csv", lambda: csv_bytes(rows(2)), 422, ("flat JSON object",),
         form={"columns": "[" * 50_000}, error_field="columns"),
    Case("huge-integer-columns-field", "d.csv", lambda: csv_bytes(rows(2)), 422, ("not JSON",),
         form={"columns": '{"score": ' + "7" * 5000 + "}"}, error_field="columns"),
    Case("deep-score-range-field", "d.csv", lambda: csv_bytes(rows(2)), 422, ("low,high",),
         form={"score_range": "[" * 50_000}, error_field="score_range"),
]


def stored_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def spools() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("stsweep-upload-*")}


def dataset_rows(ctx: Context) -> int:
    with session_scope(ctx.sessions) as s:
        return int(s.execute(text("SELECT count(*) FROM datasets")).scalar_one())


def upload(client: TestClient, filename: str, data: bytes, **form: str) -> httpx.Response:
    return client.post("/v1/datasets", data={"task": "scored_pairs", **form},
                       files={"file": (filename, data, "application/octet-stream")})


@pytest.fixture(scope="module")
def shared(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Context, TestClient]]:
    """One app and database for every refusal below (each must leave it empty, which the next one checks too)."""
    name = pg.unique_name("stsweep_ul")
    url = pg.create_database(name, template=template_db)
    root = tmp_path_factory.mktemp("upload-limits")
    settings = Settings(database_url=url, home=root / "home", artifact_root=str(root / "artifacts"),
                        _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, url)
    try:
        token = create_token(ctx.sessions, "upload-limits")
        with TestClient(create_app(ctx, run_reaper=False), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield ctx, client
    finally:
        ctx.close()
        optuna_bridge.storage.cache_clear()
        pg.drop_database(name)


LIMIT_FIELDS = ("max_decoded_bytes", "max_rows", "max_columns", "max_cell_bytes", "max_line_bytes",
                "max_jsonl_depth", "max_expansion")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_bomb_is_refused_and_nothing_is_stored(shared: tuple[Context, TestClient], case: Case) -> None:
    ctx, client = shared
    saved = {name: getattr(ctx.settings, name) for name in LIMIT_FIELDS}
    try:
        for name, value in case.limits.items():
            setattr(ctx.settings, name, value)
        _refused(ctx, client, case)
    finally:
        for name, value in saved.items():
            setattr(ctx.settings, name, value)


def _refused(ctx: Context, client: TestClient, case: Case) -> None:
    store = Path(ctx.settings.artifact_location())
    before = spools()
    r = upload(client, case.filename, case.build(), **case.form)
    assert r.status_code == case.status, r.text
    error = r.json()["error"]
    assert error["code"] == ("payload_too_large" if case.status == 413 else "invalid_input"), error
    assert error["field"] == case.error_field, error
    for fragment in case.fragments:
        assert fragment in error["message"], (fragment, error["message"])
    assert dataset_rows(ctx) == 0 and stored_files(store) == [] and spools() <= before
    assert client.get("/v1/datasets").json()["total"] == 0


# ---------------------------------------------------------------- at the limit, accepted


def decoded_size(data: list[list[Any]], fmt: str) -> int:
    """What core/limits.py counts for these rows: 8 bytes per cell plus its text (JSONL numbers: 8)."""
    total = 0
    for r in data:
        for value in r:
            if fmt == "jsonl" and not isinstance(value, str):
                total += 16
            else:
                total += 8 + len(str(value).encode("utf-8"))
    return total


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_files_at_every_limit_are_accepted(client: TestClient, ctx: Context, fmt: str) -> None:
    data = rows(100)
    data[7][1] = "é" * 500  # exactly max_cell_bytes (1000 bytes, 500 characters)
    for name, value in SMALL.items():
        setattr(ctx.settings, name, value)
    ctx.settings.max_decoded_bytes = 200_000
    wide = HEADER + [f"extra{i}" for i in range(7)]  # exactly max_columns
    r = upload(client, f"ok.{fmt}", FORMATS[fmt]([row + ["e"] * 7 for row in data], wide))
    assert r.status_code == 201, r.text
    assert r.json()["row_count"] == 100 and len(r.json()["columns"]) == 10


def test_json_nested_to_the_limit_is_accepted(client: TestClient) -> None:
    """A row object and 31 levels inside it: 32, the limit, in a JSONL line and in a JSON array."""
    line = GOOD_LINE[:-1] + ', "meta": ' + "[" * 31 + "]" * 31 + "}"
    assert upload(client, "ok.jsonl", jsonl_lines(GOOD_LINE, line)).status_code == 201
    assert upload(client, "ok.json", ("[" + line + "]").encode()).status_code == 201


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_the_decoded_size_limit_is_exact(client: TestClient, ctx: Context, fmt: str) -> None:
    data = rows(40, width=50)
    size = decoded_size(data, fmt)
    ctx.settings.max_decoded_bytes = size - 1
    refused = upload(client, f"d.{fmt}", FORMATS[fmt](data))
    assert refused.status_code == 413 and "row 40" in refused.json()["error"]["message"], refused.text
    ctx.settings.max_decoded_bytes = size
    assert upload(client, f"d.{fmt}", FORMATS[fmt](data)).status_code == 201


def test_a_highly_compressible_but_small_parquet_file_is_accepted(client: TestClient) -> None:
    """Expansion is checked only past EXPANSION_FLOOR: a small file may compress as well as it likes."""
    n = 20_000
    data = parquet_bytes(pa.table({"sentence1": repeated(n, 300), "sentence2": repeated(n, 300),
                                   "score": pa.array([0.5] * n)}))
    assert 600 * n < EXPANSION_FLOOR and len(data) * 100 < 600 * n  # over 100x, under the floor
    r = upload(client, "small.parquet", data)
    assert r.status_code == 201, r.text
    assert r.json()["row_count"] == n and r.json()["duplicate_rows"] == n - 1


def test_json_arrays_and_text_types_read_as_before(tmp_path: Path) -> None:
    """The streaming readers give the tables the whole-file readers gave: a JSON array, mixed types as text,
    whole and real numbers as float, keys first seen late as nulls before, Parquet text as plain strings."""
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "c",
                                                                                "sentence2": "d", "score": 0.5}]))
    table = read_table(p)
    assert table.column("score").type == pa.float64() and table.column("score").to_pylist() == [1.0, 0.5]
    lines = [json.dumps({"a": v}) for v in (1, "x", True, None)] + [json.dumps({"a": 2, "late": "z"})]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    mixed = read_table(tmp_path / "m.jsonl")
    assert mixed.column("a").to_pylist() == ["1", "x", "true", None, "2"]
    assert mixed.column("late").to_pylist() == [None, None, None, None, "z"]
    pq.write_table(pa.table({"s": pa.array(["x", "y"], pa.large_string()), "tags": [["a", "b"], []],
                             "meta": [{"k": "v"}, {"k": "w"}]}), tmp_path / "l.parquet")
    nested = read_table(tmp_path / "l.parquet")
    assert nested.schema.field("s").type == pa.large_string()
    assert nested.to_pylist() == [{"s": "x", "tags": ["a", "b"], "meta": {"k": "v"}},
                                  {"s": "y", "tags": [], "meta": {"k": "w"}}]


# ---------------------------------------------------------------- the same limits in the workers' loader


def test_the_worker_loader_reads_with_the_settings_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from service.core.spec import DataRef, DataSpec
    from workers.data import load_ref

    monkeypatch.setenv("STSWEEP_MAX_ROWS", "50")
    monkeypatch.setenv("STSWEEP_MAX_CELL_BYTES", "200")
    limits = Settings(_env_file=None).read_limits()  # type: ignore[call-arg]
    assert (limits.max_rows, limits.max_cell_bytes, limits.max_columns) == (50, 200, ReadLimits().max_columns)
    f = tmp_path / "train.jsonl"
    data = DataSpec.model_validate({"train": {"path": "train.jsonl"}, "eval": {"path": "train.jsonl"}})
    ref = DataRef(path="train.jsonl")
    f.write_bytes(jsonl_bytes(rows(50)))
    records = load_ref(ref, "data.train", TASKS["scored_pairs"], data, lambda r: f, limits)
    assert len(records["sentence1"]) == 50
    f.write_bytes(jsonl_bytes(rows(51)))
    with pytest.raises(PayloadTooLarge, match="row 51: more than 50 rows"):
        load_ref(ref, "data.train", TASKS["scored_pairs"], data, lambda r: f, limits)
    f.write_bytes(jsonl_bytes(rows(3) + [["a", "b" * 201, 0.5]]))
    with pytest.raises(InvalidInput, match="row 4, column 'sentence2'.*201 bytes"):
        load_ref(ref, "data.train", TASKS["scored_pairs"], data, lambda r: f, limits)


# ---------------------------------------------------------------- the real server's memory


SERVER_LIMITS = {"STSWEEP_MAX_DECODED_BYTES": str(32 * MiB), "STSWEEP_MAX_ROWS": "600000"}


def http_bombs() -> Iterator[tuple[str, str, bytes, int, str]]:
    """(kind, file name, bytes, status, a fragment of the message): every kind, at the server's limits
    (defaults, but for SERVER_LIMITS)."""
    yield "rows-csv", "b.csv", csv_bytes([["a", "b", 0.5]] * 600_001), 413, "STSWEEP_MAX_ROWS"
    yield "columns-csv", "b.csv", csv_bytes([], [f"c{i}" for i in range(1001)]), 422, "STSWEEP_MAX_COLUMNS"
    yield "cell-csv", "b.csv", csv_bytes(rows(5) + [["a", "c" * (2 * MiB), 0.5]]), 422, "STSWEEP_MAX_CELL_BYTES"
    yield "line-jsonl", "b.jsonl", jsonl_lines(GOOD_LINE, '{"x": "' + "l" * (9 * MiB) + '"}'), 422, \
        "STSWEEP_MAX_LINE_BYTES"
    yield "decoded-csv", "b.csv", csv_bytes(rows(40_000, width=1000)), 413, "STSWEEP_MAX_DECODED_BYTES"
    null_fill = "".join(json.dumps({f"k{i % 1000}": 1}) + "\n" for i in range(20_000)).encode()
    yield "null-fill-jsonl", "b.jsonl", null_fill, 413, "STSWEEP_MAX_EXPANSION"
    yield "parquet-metadata-bomb", "b.parquet", plain_bomb(), 413, "metadata"
    yield "parquet-dictionary-bomb", "b.parquet", dictionary_bomb(), 413, "STSWEEP_MAX_EXPANSION"
    yield "parquet-footer-bomb", "b.parquet", footer_bomb(), 422, "footer"
    yield "deep-jsonl", "b.jsonl", jsonl_lines(GOOD_LINE, deep_line()), 422, "STSWEEP_MAX_JSONL_DEPTH"
    yield "deep-json-array", "b.json", ("[" + deep_line() + "]").encode(), 422, "STSWEEP_MAX_JSONL_DEPTH"
    yield "nul-csv", "b.csv", csv_bytes(rows(3) + [["a\x00", "b", 0.5]]), 422, "NUL"
    yield "surrogate-jsonl", "b.jsonl", jsonl_lines(GOOD_LINE.replace('"a"', '"\\ud800"')), 422, "surrogate"
    yield "invalid-utf8-csv", "b.csv", csv_bytes(rows(3)) + b"\xff,b,0.5\n", 422, "not UTF-8"


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


class PeakMemory:
    """The peak resident memory of a process during a block: the kernel's high-water mark (VmHWM, reset through
    /proc/PID/clear_refs) where it can be reset, and VmRSS sampled every 2 ms either way."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> PeakMemory:
        self.before_kb = _status_kb(self.pid, "VmRSS")
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.sampled_kb = self.before_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.sampled_kb = max(self.sampled_kb, _status_kb(self.pid, "VmRSS"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.sampled_kb, _status_kb(self.pid, "VmHWM") if self.hwm_reset else 0)

    @property
    def growth_mb(self) -> float:
        return (self.peak_kb - self.before_kb) / 1024


@pytest.fixture
def server(tmp_path: Path, empty_database: str) -> Iterator[tuple[str, dict[str, str], int, Path]]:
    """`stsweep serve` as a subprocess on a database migrated by `stsweep db upgrade`, with a token from
    `stsweep token create`: (url, auth headers, pid, artifact folder)."""
    bin_dir = Path(sys.executable).parent
    artifacts = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(STSWEEP_DATABASE_URL=empty_database, STSWEEP_HOME=str(tmp_path / "home"),
               STSWEEP_ARTIFACT_ROOT=str(artifacts), **SERVER_LIMITS)
    cli = [str(bin_dir / "stsweep")]
    upgraded = subprocess.run([*cli, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr
    made = subprocess.run([*cli, "token", "create", "--name", "bombs"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    port = free_port()
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "stsweep serve never became ready"
            time.sleep(0.2)
        yield url, {"Authorization": f"Bearer {made.stdout.strip()}"}, proc.pid, artifacts
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_the_server_memory_stays_bounded_under_every_bomb(server: tuple[str, dict[str, str], int, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url, auth, pid, artifacts = server
    with httpx.Client(base_url=url, headers=auth, timeout=120) as http:
        def send(name: str, data: bytes) -> httpx.Response:
            return http.post("/v1/datasets", params={"task": "scored_pairs", "filename": name}, content=data,
                             headers={"Content-Type": "application/octet-stream"})

        # Warm up every reader once (imports, first allocations), then remove what it stored.
        for fmt, build in FORMATS.items():
            r = send(f"warm.{fmt}", build(rows(50)))
            assert r.status_code == 201, r.text
            assert http.delete(f"/v1/datasets/{r.json()['id']}").status_code == 204
        assert stored_files(artifacts) == []
        before = spools()
        peaks: dict[str, float] = {}
        for kind, name, data, status, fragment in http_bombs():
            started = time.perf_counter()
            with PeakMemory(pid) as memory:
                r = send(name, data)
            took = time.perf_counter() - started
            peaks[kind] = memory.growth_mb
            with capsys.disabled():
                print(f"\nBOMB kind={kind} upload_bytes={len(data)} status={r.status_code} "
                      f"peak_growth_mb={memory.growth_mb:.1f} seconds={took:.2f} "
                      f"measured={'VmHWM' if memory.hwm_reset else 'VmRSS-sampled'}", end="")
            assert r.status_code == status, (kind, r.text[:500])
            assert fragment in r.json()["error"]["message"], (kind, r.json())
        with capsys.disabled():
            print()
        assert http.get("/v1/datasets").json()["total"] == 0
        assert http.get("/healthz").status_code == 200
    assert stored_files(artifacts) == [] and spools() <= before
    over = {k: round(v, 1) for k, v in peaks.items() if v >= MEMORY_BOUND_MB}
    assert not over, f"peak memory growth over {MEMORY_BOUND_MB} MB: {over}"
