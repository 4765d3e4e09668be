"""Files without a header row, columns by 0-based position: the STS benchmark's own layout (tab-separated, score
in field 4, the sentences in 5 and 6, literal quotes, extra trailing fields on some rows) uploaded through the
real API and the CLI, referenced by a study, and read by the worker's loader to the same records as a file with
a header. A short row names the row and the position; names vs positions mismatches name `columns`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.client.http import StsweepClient, StsweepClientError
from service.context import Context
from service.core.errors import InvalidInput
from service.core.spec import StudySpec, field_errors
from tests.pairs import pair_rows, write_jsonl, write_sts_format
from tests.test_cli import cli_env, ok, one_line_error, server, stsweep  # noqa: F401 - fixtures used below
from tests.test_datasets_api import stored_files, upload
from workers.data import build_datasets
from workers.resolve import make_resolver

POSITIONS = {"sentence1": 5, "sentence2": 6, "score": 4}
QUOTED = 'A man says "hello" to the "crowd".'


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    rows = pair_rows("train", 60, seed=4)
    rows[2] = {**rows[2], "sentence1": QUOTED}  # row 3: a literal quote, and (i % 3 == 2) extra trailing fields
    return rows


@pytest.fixture
def sts_file(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    return write_sts_format(tmp_path / "sts-train.tsv", rows)


def raw_preview(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the preview of an STS-layout file shows: the fields asked for, by position, as text."""
    return [{"4": f"{r['score']:.3f}", "5": r["sentence1"], "6": r["sentence2"]} for r in rows[:5]]


def scaled(rows: list[dict[str, Any]]) -> list[float]:
    return [float(f"{r['score']:.3f}") / 5 for r in rows]


def cut_row(path: Path, index: int, keep: int) -> Path:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[index] = "\t".join(lines[index].split("\t")[:keep])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the API


def test_upload_sts_layout_without_a_header(client: TestClient, ctx: Context, sts_file: Path,
                                            rows: list[dict[str, Any]], tmp_path: Path) -> None:
    assert "extra-source" in sts_file.read_text(encoding="utf-8").splitlines()[2]  # the layout under test
    # Today's refusal without the flag: the first row is taken for a header.
    refused = upload(client, sts_file, score_range="0,5")
    assert refused.status_code == 422 and "missing column 'sentence1'" in refused.json()["error"]["message"]

    r = upload(client, sts_file, header="false", columns=json.dumps(POSITIONS), score_range="0,5")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["format"] == "tsv" and ds["row_count"] == len(rows) == 60 and ds["duplicate_rows"] == 0
    assert [(c["name"], c["role"]) for c in ds["columns"]] == [("4", "score"), ("5", "sentence1"),
                                                                ("6", "sentence2")]
    assert ds["preview"] == raw_preview(rows)
    assert ds["preview"][2]["5"] == QUOTED  # quotes are text (QUOTE_NONE), the trailing fields are ignored
    assert client.get(f"/v1/datasets/{ds['id']}").json()["preview"] == raw_preview(rows)

    # A study uses it by id with the same positions; the worker's loader reads the stored bytes by position.
    body = {"name": "sts", "task": "scored_pairs",
            "data": {"train": {"dataset_id": ds["id"], "header": False},
                     "eval": {"dataset_id": ds["id"], "header": False},
                     "columns": POSITIONS, "score_range": [0, 5]},
            "evaluation": {"max_eval_samples": None}}
    created = client.post("/v1/studies", json=body)
    assert created.status_code == 201, created.text
    assert client.get(f"/v1/datasets/{ds['id']}").json()["used_by"] == [created.json()["id"]]
    data = build_datasets(StudySpec.model_validate(body), make_resolver(ctx, tmp_path / "cache", created.json()["id"]))
    assert data.train["score"] == pytest.approx(scaled(rows))  # 0..5 on file, 0..1 for training
    assert data.train["sentence1"][2] == QUOTED
    assert data.eval["sentence2"] == [r["sentence2"] for r in rows]


def test_octet_stream_upload_with_header_false_in_the_query(client: TestClient, sts_file: Path,
                                                            rows: list[dict[str, Any]]) -> None:
    params = {"task": "scored_pairs", "filename": "sts.tsv", "header": "false", "score_range": "0,5",
              "columns": json.dumps(POSITIONS)}
    r = client.post("/v1/datasets", params=params, content=sts_file.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["row_count"] == len(rows) and r.json()["preview"] == raw_preview(rows)


def test_typed_client_uploads_without_a_header(client: TestClient, sts_file: Path,
                                               rows: list[dict[str, Any]]) -> None:
    api = StsweepClient(http=client)
    ds = api.upload_dataset(sts_file, "scored_pairs", columns=POSITIONS, score_range=(0, 5), header=False)
    assert ds.row_count == len(rows) and {c.name: c.role for c in ds.columns}["5"] == "sentence1"
    with pytest.raises(StsweepClientError) as err:
        api.upload_dataset(sts_file, "scored_pairs", columns=POSITIONS, score_range=(0, 5))
    assert err.value.status == 422 and err.value.field == "columns"


def test_short_row_is_422_naming_row_and_position(client: TestClient, ctx: Context, sts_file: Path) -> None:
    cut_row(sts_file, 9, 6)  # row 10 keeps fields 0..5: no second sentence
    r = upload(client, sts_file, header="false", columns=json.dumps(POSITIONS), score_range="0,5")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and err["field"] == "file"
    assert err["message"] == ("file: row 10: 6 fields, but column 6 (sentence2) needs at least 7 "
                              "(positions count from 0)")
    assert stored_files(Path(ctx.settings.artifact_location())) == []
    assert client.get("/v1/datasets").json()["total"] == 0


def test_bad_value_is_422_naming_row_and_position(client: TestClient, tmp_path: Path,
                                                  rows: list[dict[str, Any]]) -> None:
    rows[6] = {**rows[6], "score": 7.5}
    path = write_sts_format(tmp_path / "bad.tsv", rows)
    r = upload(client, path, header="false", columns=json.dumps(POSITIONS), score_range="0,5")
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    assert r.json()["error"]["message"] == "file: row 7, column 4: 7.5 is outside score_range [0, 5]"


@pytest.mark.parametrize(("fields", "field", "needle"), [
    ({"columns": json.dumps(POSITIONS)}, "columns", "is a position"),  # positions on a file with a header
    ({"header": "true", "columns": json.dumps(POSITIONS)}, "columns", "is a position"),
    ({"header": "false", "columns": json.dumps({"sentence1": "s1", "sentence2": 6, "score": 4})}, "columns",
     "is a name"),
    ({"header": "false"}, "columns", "0-based position"),
    ({"header": "false", "columns": json.dumps({"sentence1": 5, "sentence2": 6})}, "columns", "missing score"),
    ({"header": "false", "columns": json.dumps({"sentence1": 5, "sentence2": 6, "score": -4})}, "columns",
     "0-based position"),
    ({"header": "maybe", "columns": json.dumps(POSITIONS)}, "header", "true or false"),
])
def test_names_and_positions_mismatch_is_422_naming_columns(client: TestClient, ctx: Context, sts_file: Path,
                                                            fields: dict[str, str], field: str,
                                                            needle: str) -> None:
    r = upload(client, sts_file, score_range="0,5", **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and needle in r.json()["error"]["message"], r.json()
    # The raw-body upload refuses it before reading the body, with the same answer.
    r2 = client.post("/v1/datasets", params={"task": "scored_pairs", "filename": "s.tsv", **fields},
                     content=sts_file.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert r2.status_code == 422 and r2.json()["error"] == r.json()["error"]
    assert stored_files(Path(ctx.settings.artifact_location())) == []


def test_header_false_on_jsonl_is_422_naming_header(client: TestClient, tmp_path: Path,
                                                    rows: list[dict[str, Any]]) -> None:
    r = upload(client, write_jsonl(tmp_path / "d.jsonl", rows), header="false",
               columns=json.dumps({"sentence1": 0, "sentence2": 1, "score": 2}), score_range="0,5")
    assert r.status_code == 422 and r.json()["error"]["field"] == "header"


def test_study_with_headerless_path_references(client: TestClient, data_root: Path, sts_file: Path) -> None:
    (data_root / "sts-train.tsv").write_bytes(sts_file.read_bytes())
    body = {"name": "sts-files", "task": "scored_pairs",
            "data": {"train": {"path": "sts-train.tsv", "header": False},
                     "eval": {"path": "sts-train.tsv", "header": False},
                     "columns": POSITIONS, "score_range": [0, 5]}}
    assert client.post("/v1/studies", json=body).status_code == 201
    named = {**body, "name": "named", "data": {**body["data"], "columns": {"sentence1": "s1"}}}
    r = client.post("/v1/studies", json=named)
    assert r.status_code == 422 and r.json()["error"]["field"] == "data.columns", r.text


# ---------------------------------------------------------------- the study spec


def spec_errors(data: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as err:
        StudySpec.model_validate({"name": "s", "task": "scored_pairs", "data": data})
    return field_errors(err.value)


def test_spec_checks_header_and_columns_together() -> None:
    train, eval_ = {"path": "sts-train.tsv", "header": False}, {"path": "sts-dev.tsv", "header": False}
    spec = StudySpec.model_validate({"name": "s", "task": "scored_pairs",
                                     "data": {"train": train, "eval": eval_, "columns": POSITIONS}})
    assert spec.data.columns == POSITIONS and spec.data.headerless()
    cases = [
        ({"train": train, "eval": eval_, "columns": {**POSITIONS, "score": "4"}}, "data.columns", "is a name"),
        ({"train": train, "eval": eval_, "columns": {"sentence1": 5, "sentence2": 6}}, "data.columns",
         "missing score"),
        ({"train": train, "eval": eval_}, "data.columns", "missing sentence1, sentence2, score"),
        ({"train": {"path": "a.tsv"}, "eval": {"path": "b.tsv"}, "columns": POSITIONS}, "data.columns",
         "is a position"),
        ({"train": train, "eval": {"path": "b.tsv"}, "columns": POSITIONS}, "data.train.header", "all of them"),
        ({"train": {"path": "a.jsonl", "header": False}, "eval": eval_, "columns": POSITIONS}, "data.train.header",
         ".csv and .tsv"),
        ({"train": {"hf": "x/y", "split": "train", "header": False}, "eval": eval_, "columns": POSITIONS},
         "data.train.header", "hf dataset"),
    ]
    for data, field, needle in cases:
        errors = spec_errors(data)
        assert any(e["field"] == field and needle in e["message"] for e in errors), (data, errors)


# ---------------------------------------------------------------- the worker's loader


def test_worker_reads_a_headerless_path_to_the_same_records(data_root: Path, rows: list[dict[str, Any]]) -> None:
    write_sts_format(data_root / "sts-train.tsv", rows)
    dev = pair_rows("dev", 20, seed=5)
    write_sts_format(data_root / "sts-dev.tsv", dev)
    # The same rows with a header, as JSONL, scores as the STS file prints them.
    write_jsonl(data_root / "train.jsonl", [{**r, "score": float(f"{r['score']:.3f}")} for r in rows])
    write_jsonl(data_root / "dev.jsonl", [{**r, "score": float(f"{r['score']:.3f}")} for r in dev])

    def spec(data: dict[str, Any]) -> StudySpec:
        return StudySpec.model_validate({"name": "s", "task": "scored_pairs",
                                         "data": {**data, "score_range": [0, 5]},
                                         "evaluation": {"max_eval_samples": None}})

    resolve = lambda ref: data_root / str(ref.path)  # noqa: E731
    headerless = build_datasets(spec({"train": {"path": "sts-train.tsv", "header": False},
                                      "eval": {"path": "sts-dev.tsv", "header": False},
                                      "columns": POSITIONS}), resolve)
    headed = build_datasets(spec({"train": {"path": "train.jsonl"}, "eval": {"path": "dev.jsonl"}}), resolve)
    assert headerless.train.column_names == ["sentence1", "sentence2", "score"]
    assert headerless.train["score"] == pytest.approx(headed.train["score"])
    assert headerless.train["sentence1"] == headed.train["sentence1"] and headerless.train["sentence1"][2] == QUOTED
    assert headerless.eval["sentence2"] == headed.eval["sentence2"] and len(headerless.eval) == 20

    # A short row fails the study's data loading with the same message as an upload.
    cut_row(data_root / "sts-dev.tsv", 4, 5)
    short = "row 5: 5 fields, but column 5 (sentence1) needs at least 6"
    with pytest.raises(InvalidInput, match=re.escape(short)):
        build_datasets(spec({"train": {"path": "sts-train.tsv", "header": False},
                             "eval": {"path": "sts-dev.tsv", "header": False}, "columns": POSITIONS}), resolve)


# ---------------------------------------------------------------- the CLI, against a live server


def test_cli_uploads_without_a_header(cli_env: dict[str, str], sts_file: Path,  # noqa: F811
                                      rows: list[dict[str, Any]]) -> None:
    columns = json.dumps(POSITIONS)
    up = stsweep("datasets", "upload", str(sts_file), "--task", "scored_pairs", "--no-header",
                 "--columns", columns, "--score-range", "0,5", env=cli_env)
    dataset_id = ok(up).strip()
    assert re.fullmatch(r"ds_[0-9a-f]{16}", dataset_id), up.stdout
    assert f"{len(rows)} rows" in up.stderr and "columns 4, 5, 6" in up.stderr

    # Usage errors, before anything is sent (exit 2).
    one_line_error(stsweep("datasets", "upload", str(sts_file), "--task", "scored_pairs", "--columns", columns,
                           env=cli_env), 2, "--no-header")
    one_line_error(stsweep("datasets", "upload", str(sts_file), "--task", "scored_pairs", "--no-header",
                           "--columns", '{"sentence1": "s1"}', env=cli_env), 2, "--columns", "positions")
    one_line_error(stsweep("datasets", "upload", str(sts_file), "--task", "scored_pairs", "--no-header",
                           env=cli_env), 2, "--columns")
    # The server's answer on a short row (exit 1), naming the row and the position.
    cut_row(sts_file, 11, 5)
    one_line_error(stsweep("datasets", "upload", str(sts_file), "--task", "scored_pairs", "--no-header",
                           "--columns", columns, "--score-range", "0,5", env=cli_env), 1, "row 12", "column 5")
