"""Issue 18, item 5: every Arrow type a Parquet file can hold is either read or refused with a 422 naming the
column, through the real upload endpoint (real PostgreSQL), in three places: as an extra column (it reaches the
preview, stored as JSONB and read back), as a sentence and as a score. Values past Python's datetime range
(timestamps of every unit and time zone, date32 / date64, durations) are included; so are nulls. The types
pyarrow cannot write to Parquet at all (unions, run-end encoded, month_day_nano intervals) are shown to be so."""

from __future__ import annotations

import decimal
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

FAR = 10**15  # seconds: ~31 million years, past datetime's year 9999 in every unit that can hold it
BIG = 2**62


def _columns() -> Iterator[tuple[str, pa.Array]]:
    for kind in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()):
        yield str(kind), pa.array([0, 1, None], kind)
    yield "uint64 max", pa.array([2**64 - 1, 0, 1], pa.uint64())
    yield "float16", pa.array([1.0, 2.5, None], pa.float16())
    yield "float32", pa.array([0.5, float("nan"), float("inf")], pa.float32())
    yield "float64", pa.array([0.5, -0.0, None], pa.float64())
    yield "decimal32", pa.array([decimal.Decimal("1.50")] * 3, pa.decimal32(5, 2))
    yield "decimal64", pa.array([decimal.Decimal("0.25")] * 3, pa.decimal64(18, 2))
    yield "decimal128", pa.array([decimal.Decimal("1.5")] * 3, pa.decimal128(38, 10))
    yield "decimal256 huge", pa.array([decimal.Decimal("9" * 76)] * 3, pa.decimal256(76, 0))
    yield "decimal256 tiny", pa.array([decimal.Decimal("1e-70")] * 3, pa.decimal256(76, 76))
    for unit in ("s", "ms", "us", "ns"):
        for tz in (None, "UTC", "Asia/Kolkata", "+05:45"):
            far = FAR if unit == "s" else BIG
            yield f"timestamp[{unit}, {tz}]", pa.array([0, far, -far], pa.timestamp(unit, tz))
            yield f"timestamp[{unit}, {tz}] in range", pa.array([0, 1, None], pa.timestamp(unit, tz))
    yield "date32 far", pa.array([0, 2**31 - 1, -(2**31)], pa.date32())
    yield "date64 far", pa.array([0, BIG, -BIG], pa.date64())
    yield "date32", pa.array([0, 19000, None], pa.date32())
    yield "time32[s]", pa.array([0, 86399, None], pa.time32("s"))
    yield "time32[ms]", pa.array([0, 86399999, None], pa.time32("ms"))
    yield "time64[us]", pa.array([0, 1, None], pa.time64("us"))
    yield "time64[ns]", pa.array([0, 86399 * 10**9 + 1, None], pa.time64("ns"))
    for unit in ("s", "ms", "us", "ns"):
        yield f"duration[{unit}] far", pa.array([0, BIG, -BIG], pa.duration(unit))
        yield f"duration[{unit}]", pa.array([0, 1, None], pa.duration(unit))
    yield "binary", pa.array([b"\xff\x00", b"a", None], pa.binary())
    yield "large_binary", pa.array([b"\xff\x00", b"a", None], pa.large_binary())
    yield "fixed_size_binary", pa.array([b"ab", b"cd", None], pa.binary(2))
    yield "binary_view", pa.array([b"ab", b"cd", None], pa.binary_view())
    yield "string", pa.array(["ab", "cd", None], pa.string())
    yield "large_string", pa.array(["ab", "cd", "ef"], pa.large_string())
    yield "string_view", pa.array(["ab", "cd", "ef"], pa.string_view())
    yield "bool", pa.array([True, False, None])
    yield "null", pa.nulls(3)
    yield "dictionary", pa.array(["a", "b", "a"]).dictionary_encode()
    yield "dictionary of ints", pa.array([1, 2, 1]).dictionary_encode()
    yield "list", pa.array([[1], [2, 3], None], pa.list_(pa.int64()))
    yield "large_list", pa.array([[1], [2, 3], None], pa.large_list(pa.int64()))
    yield "fixed_size_list", pa.array([[1, 2], [2, 3], None], pa.list_(pa.int64(), 2))
    yield "list_view", pa.array([[1], [2, 3], None], pa.list_view(pa.int64()))
    yield "list of far timestamps", pa.array([[BIG], [1], None], pa.list_(pa.timestamp("ms")))
    yield "list of far dates", pa.array([[2**31 - 1], [1], None], pa.list_(pa.date32()))
    yield "struct", pa.array([{"a": 1, "b": "x"}, {"a": 2, "b": None}, None],
                             pa.struct([("a", pa.int64()), ("b", pa.string())]))
    yield "struct of far durations", pa.array([{"d": BIG}, {"d": 1}, None], pa.struct([("d", pa.duration("s"))]))
    yield "map", pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64()))
    yield "map of far dates", pa.array([[("k", 2**31 - 1)], [], None], pa.map_(pa.string(), pa.date32()))
    yield "uuid (extension)", pa.array([b"0" * 16] * 3, pa.uuid())
    yield "json (extension)", pa.array(['{"a": 1}', "[]", None], pa.json_())
    yield "bool8 (extension)", pa.array([1, 0, None], pa.bool8())


NOT_IN_PARQUET = {
    "sparse union": lambda: pa.UnionArray.from_sparse(pa.array([0, 1, 0], pa.int8()),
                                                      [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])]),
    "dense union": lambda: pa.UnionArray.from_dense(pa.array([0, 1, 0], pa.int8()), pa.array([0, 0, 1], pa.int32()),
                                                    [pa.array([1, 2]), pa.array(["a"])]),
    "run-end encoded": lambda: pa.RunEndEncodedArray.from_arrays(pa.array([3], pa.int32()), pa.array(["x"])),
    "month_day_nano interval": lambda: pa.array([(1, 2, 3)] * 3, pa.month_day_nano_interval()),
}


def _parquet(extra: pa.Array) -> bytes:
    table = pa.table({"sentence1": ["one", "two", "three"], "sentence2": ["uno", "dos", "tres"],
                      "score": [0.1, 0.2, 0.3], "x": extra})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _upload(client: TestClient, data: bytes, columns: dict[str, str] | None) -> Any:
    # the widest score range service/core/numeric_limits.py allows
    params = {"task": "scored_pairs", "filename": "t.parquet", "score_range": "-1e9,1e9"}
    if columns:
        params["columns"] = json.dumps(columns)
    return client.post("/v1/datasets", params=params, content=data,
                       headers={"Content-Type": "application/octet-stream"})


def _refused_naming_x(r: Any) -> bool:
    error = r.json()["error"]
    return r.status_code == 422 and error["field"] in ("file", "columns") and "'x'" in error["message"]


def test_every_type_is_read_or_refused_naming_the_column(client: TestClient) -> None:
    kinds = 0
    for name, array in _columns():
        data = _parquet(array)
        kinds += 1
        r = _upload(client, data, None)  # the column only reaches the preview: it must be read
        assert r.status_code in (200, 201), (name, r.status_code, r.text[:300])
        shown = client.get(f"/v1/datasets/{r.json()['id']}").json()
        assert len(shown["preview"]) == 3 and "x" in shown["preview"][0], (name, shown["preview"])
        assert [c["name"] for c in shown["columns"]] == ["sentence1", "sentence2", "score", "x"]
        for role in ("sentence1", "score"):
            r = _upload(client, data, {role: "x"})
            where = (name, role, r.status_code, r.text[:300])
            assert r.status_code in (200, 201) or _refused_naming_x(r), where
            if role == "sentence1" and r.status_code in (200, 201):  # text it is, then
                assert name in ("string", "large_string", "string_view", "dictionary", "json (extension)"), where
            if role == "score" and r.status_code in (200, 201):
                assert not name.startswith(("timestamp", "date", "time", "duration", "binary", "list")), where
    assert kinds >= 70
    assert client.get("/healthz").status_code == 200


def test_far_values_are_shown_in_the_preview_as_arrow_prints_them(client: TestClient) -> None:
    r = _upload(client, _parquet(pa.array([0, 2**31 - 1, None], pa.date32())), None)
    preview = client.get(f"/v1/datasets/{r.json()['id']}").json()["preview"]
    assert preview[0]["x"] == "1970-01-01" and "out of range" in preview[1]["x"] and preview[2]["x"] is None
    r = _upload(client, _parquet(pa.array([0, 2**31 - 1, None], pa.date32())), {"score": "x"})
    assert r.status_code == 422 and "column 'x'" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("name", sorted(NOT_IN_PARQUET))
def test_types_parquet_cannot_hold_are_refused_by_the_writer(name: str) -> None:
    with pytest.raises(pa.ArrowNotImplementedError):
        _parquet(NOT_IN_PARQUET[name]())
