"""Data sets over HTTP: the bundled demo pairs uploaded as JSONL / CSV, same bytes same id, 422 naming row and
column, 413 while streaming with nothing left behind, delete refused while used, ids never become paths."""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.routes_studies import study_id_shape
from service.store.checkpoints import trial_number_param
from service.client.http import StsweepClient, StsweepClientError
from service.context import Context
from service.store.datasets import validate_id
from service.core.errors import NotFound
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["sentence1", "sentence2", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def stored_files(settings_root: Path) -> list[str]:
    if not settings_root.exists():
        return []
    return sorted(p.relative_to(settings_root).as_posix() for p in settings_root.rglob("*") if p.is_file())


def spools() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("stsweep-upload-*")}


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    return pair_rows("train", 120, seed=0)


@pytest.fixture
def store_root(ctx: Context) -> Path:
    return Path(ctx.settings.artifact_location())


@pytest.fixture
def small_limit(ctx: Context) -> Iterator[int]:
    """Override the upload limit for one test (the route reads it per request)."""
    old = ctx.settings.max_upload_bytes
    ctx.settings.max_upload_bytes = 4096
    yield 4096
    ctx.settings.max_upload_bytes = old


def upload(client: TestClient, path: Path, task: str = "scored_pairs", **fields: str) -> Any:
    with path.open("rb") as f:
        return client.post("/v1/datasets", data={"task": task, **fields},
                           files={"file": (path.name, f, "application/octet-stream")})


def test_jsonl_round_trip(client: TestClient, rows: list[dict[str, Any]], tmp_path: Path,
                          store_root: Path) -> None:
    rows = rows + [dict(rows[20]), dict(rows[50])]  # two repeated rows: the bundled pairs have none of their own
    path = write_jsonl(tmp_path / "pairs-train.jsonl", rows)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    r = upload(client, path, score_range="0,5")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["id"] == "ds_" + sha[:16] and ds["sha256"] == sha
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert (ds["format"], ds["filename"], ds["size_bytes"]) == ("jsonl", "pairs-train.jsonl", path.stat().st_size)
    assert ds["row_count"] == len(rows)
    assert ds["duplicate_rows"] == len(rows) - len({(r["sentence1"], r["sentence2"], r["score"]) for r in rows}) == 2
    assert [(c["name"], c["role"]) for c in ds["columns"]] == [
        ("sentence1", "sentence1"), ("sentence2", "sentence2"), ("score", "score")]
    assert ds["preview"] == rows[:5]

    got = client.get(f"/v1/datasets/{ds['id']}").json()
    assert got["row_count"] == len(rows) and got["preview"] == rows[:5] and got["used_by"] == []
    page = client.get("/v1/datasets", params={"limit": 10}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == ds["id"] and "preview" not in page["items"][0]
    # Stored by content hash, byte for byte.
    assert stored_files(store_root) == [f"datasets/{sha}.jsonl"]
    assert (store_root / f"datasets/{sha}.jsonl").read_bytes() == path.read_bytes()


def test_csv_reupload_same_id_one_copy(client: TestClient, ctx: Context, rows: list[dict[str, Any]],
                                       tmp_path: Path, store_root: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", rows)
    first = upload(client, path, score_range="[0, 5]")
    assert first.status_code == 201, first.text
    again = upload(client, path, score_range="0,5")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    copy = tmp_path / "renamed.csv"  # same bytes under another name: still the same data set
    copy.write_bytes(path.read_bytes())
    assert upload(client, copy, score_range="0,5").json()["id"] == first.json()["id"]
    assert client.get("/v1/datasets").json()["total"] == 1
    assert len(stored_files(store_root)) == 1

    # The typed client sees the same data set.
    api = StsweepClient(http=client)
    ds = api.upload_dataset(path, "scored_pairs", score_range=(0, 5))
    assert ds.id == first.json()["id"] and ds.row_count == len(rows)
    assert [d.id for d in api.list_datasets().items] == [ds.id]


def test_octet_stream_upload_with_query_parameters(client: TestClient, rows: list[dict[str, Any]],
                                                   tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "x.jsonl", [{"a": r["sentence1"], "b": r["sentence2"], "sim": r["score"]}
                                              for r in rows]).read_bytes()
    params = {"task": "scored_pairs", "filename": "x.jsonl", "score_range": "0,5",
              "columns": json.dumps({"sentence1": "a", "sentence2": "b", "score": "sim"})}
    r = client.post("/v1/datasets", params=params, content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert {c["name"]: c["role"] for c in r.json()["columns"]} == {"a": "sentence1", "b": "sentence2",
                                                                    "sim": "score"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_empty_text_names_row_and_column(client: TestClient, rows: list[dict[str, Any]], tmp_path: Path,
                                         store_root: Path, fmt: str) -> None:
    rows[6] = {**rows[6], "sentence2": "   "}
    path = tmp_path / f"bad.{fmt}"
    write_jsonl(path, rows) if fmt == "jsonl" else write_csv(path, rows)
    before = spools()
    r = upload(client, path, score_range="0,5")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and err["field"] == "file"
    assert "row 7" in err["message"] and "'sentence2'" in err["message"] and "empty text" in err["message"]
    assert stored_files(store_root) == [] and spools() <= before
    assert client.get("/v1/datasets").json()["total"] == 0


def test_score_out_of_range_names_row_and_column(client: TestClient, rows: list[dict[str, Any]],
                                                 tmp_path: Path, store_root: Path) -> None:
    rows[10] = {**rows[10], "score": 7.5}
    r = upload(client, write_jsonl(tmp_path / "bad.jsonl", rows), score_range="0,5")
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "row 11" in message and "'score'" in message and "7.5" in message and "[0, 5]" in message
    # The default range (0..1) refuses the 0..5 scores too, at the first row above 1.
    first_high = next(i for i, row in enumerate(rows, start=1) if row["score"] > 1)
    r = upload(client, write_jsonl(tmp_path / "raw.jsonl", rows))
    assert r.status_code == 422 and f"row {first_high}," in r.json()["error"]["message"]
    assert stored_files(store_root) == []


@pytest.mark.parametrize(("fields", "field"), [
    ({"columns": json.dumps({"score": "label"})}, "columns.score"),
    ({"columns": json.dumps({"bogus": "x"})}, "columns"),
    ({"columns": "{not json"}, "columns"),
    ({"score_range": "5,0"}, "score_range"),
    ({"score_range": "a,b"}, "score_range"),
])
def test_bad_options_name_the_field(client: TestClient, rows: list[dict[str, Any]], tmp_path: Path,
                                    fields: dict[str, str], field: str) -> None:
    r = upload(client, write_jsonl(tmp_path / "d.jsonl", rows), **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_missing_task_and_unknown_format(client: TestClient, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with path.open("rb") as f:
        r = client.post("/v1/datasets", files={"file": ("d.jsonl", f)})
    assert r.status_code == 422 and r.json()["error"]["field"] == "task"
    other = tmp_path / "d.xlsx"
    other.write_bytes(path.read_bytes())
    r = upload(client, other)
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"
    r = client.post("/v1/datasets", data={"task": "scored_pairs"})
    assert r.status_code == 422


def test_oversized_upload_is_refused_while_streaming(client: TestClient, small_limit: int,
                                                     rows: list[dict[str, Any]], tmp_path: Path,
                                                     store_root: Path) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    assert path.stat().st_size > 4 * small_limit
    before = spools()
    r = upload(client, path, score_range="0,5")
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    # Raw body sent in chunks without a Content-Length: the limit still holds.
    data = path.read_bytes()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]

    r = client.post("/v1/datasets", params={"task": "scored_pairs", "filename": "big.jsonl", "score_range": "0,5"},
                    content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413, r.text
    # A declared length far past the limit is refused before the body is read.
    r = client.post("/v1/datasets", params={"task": "scored_pairs", "filename": "big.jsonl"},
                    content=b"x" * (small_limit + 1024 * 1024 + 1), headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert stored_files(store_root) == [] and spools() <= before
    assert client.get("/v1/datasets").json()["total"] == 0
    # Under the limit it goes through.
    small = write_jsonl(tmp_path / "small.jsonl", rows[:5])
    assert small.stat().st_size <= small_limit
    assert upload(client, small, score_range="0,5").status_code == 201


def test_delete_refused_while_a_study_uses_it(client: TestClient, rows: list[dict[str, Any]], tmp_path: Path,
                                              store_root: Path) -> None:
    ds = upload(client, write_jsonl(tmp_path / "d.jsonl", rows), score_range="0,5").json()
    body = contract_study(data={"train": {"dataset_id": ds["id"]}, "eval": {"dataset_id": ds["id"]},
                                "score_range": [0, 5]}, budget={"n_trials": 2, "max_concurrent_trials": 1})
    study = client.post("/v1/studies", json=body)
    assert study.status_code == 201, study.text
    study_id = study.json()["id"]
    assert client.get(f"/v1/datasets/{ds['id']}").json()["used_by"] == [study_id]

    r = client.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and study_id in r.json()["error"]["message"]
    api = StsweepClient(http=client)
    with pytest.raises(StsweepClientError) as info:
        api.delete_dataset(ds["id"])
    assert (info.value.status, info.value.code) == (409, "conflict")
    assert len(stored_files(store_root)) == 1

    # A study may not reference a data set that does not exist.
    missing = contract_study(data={"train": {"dataset_id": "ds_0000000000000000"},
                                   "eval": {"dataset_id": ds["id"]}})
    r = client.post("/v1/studies", json=missing)
    assert r.status_code == 422 and r.json()["error"]["field"] == "data.train.dataset_id"

    assert client.delete(f"/v1/studies/{study_id}").status_code == 204
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404
    assert stored_files(store_root) == []


class _Spy:
    """Stands in for the artifact store and records any use."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"artifact store touched: {name}")


TRAVERSALS = ["..", "%2e%2e", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc",
              "ds_..%2F..%2Fx", "ds_0123456789abcdeg", "ds_0123456789abcdef%00", "%252e%252e", "C:%5Cwindows"]


def test_path_traversal_in_ids_is_not_found(client: TestClient, ctx: Context, rows: list[dict[str, Any]],
                                            tmp_path: Path) -> None:
    ds = upload(client, write_jsonl(tmp_path / "d.jsonl", rows), score_range="0,5").json()
    spy = _Spy()
    ctx.__dict__["artifacts"] = spy  # any read of the store fails the test
    urls = []
    for bad in TRAVERSALS:
        urls += [("GET", f"/v1/datasets/{bad}"), ("DELETE", f"/v1/datasets/{bad}"),
                 ("GET", f"/v1/studies/{bad}/best-checkpoint"), ("HEAD", f"/v1/studies/{bad}/best-checkpoint"),
                 ("GET", f"/v1/studies/{bad}/trials/0/checkpoint"),
                 ("GET", f"/v1/studies/st_0123456789abcdef/trials/{bad}/checkpoint")]
    urls += [("GET", "/v1/datasets//etc/passwd"), ("GET", "/v1/datasets/%2F..%2F..%2Fetc%2Fpasswd"),
             ("GET", "/v1/studies//etc/passwd/best-checkpoint"),
             ("GET", "/v1/studies/st_0123456789abcdef/trials/-1/checkpoint"),
             ("GET", "/v1/studies/st_0123456789abcdef/trials/1e3/checkpoint")]
    for method, url in urls:
        r = client.request(method, url)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
    assert spy.calls == []
    # httpx folds a literal ".." segment before sending; the validators refuse it as well.
    for bad in ("..", "../..", "/etc/passwd", "ds_" + "0" * 15 + "/"):
        with pytest.raises(NotFound):
            validate_id(bad)
        with pytest.raises(NotFound):
            study_id_shape(bad)
        with pytest.raises(NotFound):
            trial_number_param(bad)
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 200  # the real one is still there
