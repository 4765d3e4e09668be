"""service.core.tabular: reading CSV/TSV/JSONL/Parquet and validating rows per task (fast, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core.errors import InvalidInput
from service.core.tabular import check_rows, read_table, to_records
from tests.pairs import pair_rows, write_sts_format

SCORED = "scored_pairs"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_quotes_and_header(tmp_path: Path) -> None:
    p = write(tmp_path / "a.csv", 'sentence1,sentence2,score\n"A man, tall.","He said ""hi"".",4.5\nx,y,0\n')
    table = read_table(p)
    assert table.column_names == ["sentence1", "sentence2", "score"]
    assert table.column("sentence1").to_pylist() == ["A man, tall.", "x"]
    assert table.column("sentence2").to_pylist()[0] == 'He said "hi".'


def test_tsv_keeps_quotes_and_ignores_extra_trailing_fields(tmp_path: Path) -> None:
    p = write(tmp_path / "a.tsv", 's1\ts2\tscore\r\n"Quoted" start\tplain\t3.0\textra\tmore\r\nb\tc\t1\r\n')
    table = read_table(p)
    assert table.num_rows == 2
    assert table.column("s1").to_pylist() == ['"Quoted" start', "b"]
    assert table.column_names == ["s1", "s2", "score"]


def test_tsv_short_row_names_the_row(tmp_path: Path) -> None:
    p = write(tmp_path / "a.tsv", "s1\ts2\tscore\na\tb\t1\nonly-one\n")
    with pytest.raises(InvalidInput, match="row 2: 1 fields"):
        read_table(p)


def test_header_is_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        read_table(write(tmp_path / "e.csv", ""))
    with pytest.raises(InvalidInput, match="appears twice"):
        read_table(write(tmp_path / "d.csv", "a,a\n1,2\n"))


def test_jsonl_and_json_array_and_parquet(tmp_path: Path) -> None:
    rows = [{"sentence1": "a", "sentence2": "b", "score": 1.5}, {"sentence1": "c", "sentence2": "d", "score": 2}]
    jl = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    arr = write(tmp_path / "b.json", json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    for path in (jl, arr, tmp_path / "c.parquet"):
        table = read_table(path)
        assert table.num_rows == 2
        assert to_records(table, SCORED, score_range=(0, 5))["score"] == [0.3, 0.4]


def test_jsonl_bad_line(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"a": 1}\n{oops\n')
    with pytest.raises(InvalidInput, match="line 2"):
        read_table(p)


def test_format_override_and_unknown_suffix(tmp_path: Path) -> None:
    p = write(tmp_path / "data.txt", "a\tb\n1\t2\n")
    assert read_table(p, "tsv").num_rows == 1
    with pytest.raises(InvalidInput) as err:
        read_table(p)
    assert err.value.field == "format"


def scored_table(scores: list[object]) -> pa.Table:
    n = len(scores)
    return pa.table({"s1": [f"a{i}" for i in range(n)], "s2": [f"b{i}" for i in range(n)],
                     "score": pa.array([str(s) for s in scores])})


def test_score_outside_range_names_row_and_column() -> None:
    table = scored_table([1, 2, 7.2])
    cols = {"sentence1": "s1", "sentence2": "s2"}
    with pytest.raises(InvalidInput) as err:
        check_rows(table, SCORED, cols, (0, 5))
    assert str(err.value) == "row 3, column 'score': 7.2 is outside score_range [0, 5]"
    with pytest.raises(InvalidInput, match="row 1, column 'score': 'x' is not a number"):
        check_rows(scored_table(["x"]), SCORED, cols, (0, 5))


def test_missing_column_and_empty_text() -> None:
    with pytest.raises(InvalidInput) as err:
        check_rows(scored_table([1]), SCORED, {}, (0, 5))
    assert err.value.field == "data.columns.sentence1"
    table = pa.table({"sentence1": ["a", "  "], "sentence2": ["b", "c"], "score": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match="row 2, column 'sentence1': empty text"):
        check_rows(table, SCORED, None, (0, 5))
    nulls = pa.table({"sentence1": ["a", None], "sentence2": ["b", "c"], "score": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match="row 2, column 'sentence1'"):
        check_rows(nulls, SCORED, None, (0, 5))


def test_labels_must_be_zero_or_one() -> None:
    ok = pa.table({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "label": ["1", "0", "1"]})
    assert to_records(ok, "labelled_pairs")["label"] == [1, 0, 1]
    bad = pa.table({"sentence1": ["a", "b"], "sentence2": ["d", "e"], "label": [1, 2]})
    with pytest.raises(InvalidInput, match="row 2, column 'label': label must be 0 or 1, got 2"):
        check_rows(bad, "labelled_pairs")


def test_report_counts_duplicates_and_previews() -> None:
    table = pa.table({"anchor": ["q1", "q2", "q1", "q3", "q4", "q5", "q6"],
                      "positive": ["p1", "p2", "p1", "p3", "p4", "p5", "p6"]})
    report = check_rows(table, "pairs")
    assert report.row_count == 7 and report.duplicate_rows == 1
    assert report.columns == ["anchor", "positive"]
    assert report.preview[0] == {"anchor": "q1", "positive": "p1"} and len(report.preview) == 5


def test_to_records_maps_columns_in_task_order() -> None:
    table = pa.table({"extra": ["z"], "neg": ["n"], "pos": ["p"], "q": ["a"]})
    records = to_records(table, "triplets", {"anchor": "q", "positive": "pos", "negative": "neg"})
    assert list(records) == ["anchor", "positive", "negative"]
    assert records == {"anchor": ["a"], "positive": ["p"], "negative": ["n"]}


def test_reads_sts_format_rows_with_a_header(tmp_path: Path) -> None:
    # The STS files have no header; with one added, every row (quotes, extra trailing fields) reads as is.
    rows = pair_rows("train", None, seed=0)
    rows[3]["sentence1"] = 'He said "no" twice.'
    header = "genre\tfile\tyear\tid\tscore\tsentence1\tsentence2\n"
    raw = write_sts_format(tmp_path / "raw.tsv", rows).read_text(encoding="utf-8")
    p = write(tmp_path / "sts.tsv", header + raw)
    table = read_table(p)
    assert table.num_rows == len(rows) == 400
    report = check_rows(table, SCORED, None, (0, 5))
    assert report.row_count == 400
    records = to_records(table, SCORED, None, (0, 5))
    assert records["score"] == pytest.approx([float(f"{r['score']:.3f}") / 5 for r in rows])
    assert records["sentence1"][3] == 'He said "no" twice.'
    assert records["sentence2"] == [r["sentence2"] for r in rows]
