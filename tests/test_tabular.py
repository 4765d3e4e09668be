"""service.core.tabular: reading CSV/TSV/JSONL/Parquet and validating rows per task (fast, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.core.errors import InvalidInput
from service.core.tabular import check_rows, column_map, read_table, to_records
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


# ---------------------------------------------------------------- files without a header (positions)

STS_POSITIONS = {"sentence1": 5, "sentence2": 6, "score": 4}


def test_headerless_sts_layout_reads_by_position(tmp_path: Path) -> None:
    rows = pair_rows("train", 30, seed=1)
    rows[4]["sentence1"] = 'She said "yes" and left.'
    p = write_sts_format(tmp_path / "sts-train.tsv", rows)
    table = read_table(p, header=False, columns=STS_POSITIONS)
    assert table.num_rows == 30 and table.column_names == ["4", "5", "6"]  # only the fields asked for
    report = check_rows(table, SCORED, STS_POSITIONS, (0, 5))
    assert report.row_count == 30 and report.roles == {"4": "score", "5": "sentence1", "6": "sentence2"}
    assert report.preview[0] == {"4": f"{rows[0]['score']:.3f}", "5": rows[0]["sentence1"],
                                 "6": rows[0]["sentence2"]}
    records = to_records(table, SCORED, STS_POSITIONS, (0, 5))
    assert list(records) == ["sentence1", "sentence2", "score"]
    assert records["sentence1"][4] == 'She said "yes" and left.'  # QUOTE_NONE: the quotes are text
    assert records["sentence2"] == [r["sentence2"] for r in rows]
    assert records["score"] == pytest.approx([float(f"{r['score']:.3f}") / 5 for r in rows])


def test_headerless_csv_keeps_csv_quoting(tmp_path: Path) -> None:
    p = write(tmp_path / "a.csv", '"A man, tall.",x,"He said ""hi"".",4.5,extra\nb,y,c,1\n')
    cols = {"sentence1": 0, "sentence2": 2, "score": 3}
    records = to_records(read_table(p, header=False, columns=cols), SCORED, cols, (0, 5))
    assert records == {"sentence1": ["A man, tall.", "b"], "sentence2": ['He said "hi".', "c"],
                       "score": [0.9, 0.2]}


def test_headerless_short_row_names_row_and_position(tmp_path: Path) -> None:
    rows = pair_rows("train", 6, seed=2)
    p = write_sts_format(tmp_path / "sts.tsv", rows)
    lines = p.read_text(encoding="utf-8").splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:6])  # row 4 lost its second sentence
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        read_table(p, header=False, columns=STS_POSITIONS)
    assert err.value.field == "file"
    assert str(err.value) == "row 4: 6 fields, but column 6 (sentence2) needs at least 7 (positions count from 0)"


def test_headerless_bad_values_name_row_and_position(tmp_path: Path) -> None:
    p = write(tmp_path / "a.tsv", "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\t7.5\tc\td\ng\tf\t2012\t3\tx\te\tf\n")
    table = read_table(p, header=False, columns=STS_POSITIONS)
    with pytest.raises(InvalidInput) as err:
        check_rows(table, SCORED, STS_POSITIONS, (0, 5))
    assert str(err.value) == "row 2, column 4: 7.5 is outside score_range [0, 5]" and err.value.field == "file"
    with pytest.raises(InvalidInput, match=r"^row 3, column 4: 'x' is not a number$"):
        check_rows(table, SCORED, STS_POSITIONS, (0, 10))
    blank = write(tmp_path / "b.tsv", "g\tf\t2012\t1\t4.0\ta\t \n")
    with pytest.raises(InvalidInput, match=r"^row 1, column 6: empty text$"):
        check_rows(read_table(blank, header=False, columns=STS_POSITIONS), SCORED, STS_POSITIONS, (0, 5))


@pytest.mark.parametrize(("header", "columns", "needle"), [
    (True, STS_POSITIONS, "is a position"),  # a position on a file with a header
    (False, {"sentence1": "s1", "sentence2": 6, "score": 4}, "is a name"),  # a name on a file without one
    (False, None, "needs columns"),
    (False, {"sentence1": -1, "sentence2": 6, "score": 4}, "0-based position"),
    (False, {"sentence1": True, "sentence2": 6, "score": 4}, "0-based position"),
])
def test_names_and_positions_must_match_the_header(tmp_path: Path, header: bool, columns: object,
                                                   needle: str) -> None:
    p = write_sts_format(tmp_path / "sts.tsv", pair_rows("train", 3, seed=0))
    with pytest.raises(InvalidInput, match=needle) as err:
        read_table(p, header=header, columns=columns)  # type: ignore[arg-type]
    assert err.value.field == "data.columns"


def test_column_map_checks_every_role_without_a_header(tmp_path: Path) -> None:
    assert column_map(SCORED, {"score": "label"}) == {"sentence1": "sentence1", "sentence2": "sentence2",
                                                      "score": "label"}
    assert column_map(SCORED, STS_POSITIONS, header=False) == STS_POSITIONS
    with pytest.raises(InvalidInput, match="missing sentence2, score") as err:
        column_map(SCORED, {"sentence1": 5}, header=False, field="columns")
    assert err.value.field == "columns"
    # A table read without a header is checked with positions only, and the other way round.
    p = write_sts_format(tmp_path / "sts.tsv", pair_rows("train", 3, seed=0))
    headerless = read_table(p, header=False, columns=STS_POSITIONS)
    with pytest.raises(InvalidInput, match="is a name") as err:
        check_rows(headerless, SCORED, {"sentence1": "5", "sentence2": "6", "score": "4"}, (0, 5))
    assert err.value.field == "data.columns"
    with pytest.raises(InvalidInput, match="is a position") as err:
        check_rows(scored_table([1]), SCORED, {"sentence1": 0, "sentence2": 1, "score": 2}, (0, 5))
    assert err.value.field == "data.columns"


def test_header_false_is_for_csv_and_tsv_only(tmp_path: Path) -> None:
    p = write(tmp_path / "a.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n')
    with pytest.raises(InvalidInput, match="CSV and TSV") as err:
        read_table(p, header=False, columns={"sentence1": 0, "sentence2": 1, "score": 2})
    assert err.value.field == "header"


def test_headerless_blank_lines_skipped_and_empty_file_has_no_rows(tmp_path: Path) -> None:
    p = write(tmp_path / "a.tsv", "\n0\t1\ta\tb\n\n0\t2\tc\td\n")
    cols = {"sentence1": 2, "sentence2": 3, "score": 1}
    assert to_records(read_table(p, header=False, columns=cols), SCORED, cols, (0, 5))["sentence1"] == ["a", "c"]
    empty = read_table(write(tmp_path / "e.tsv", "\n\n"), header=False, columns=cols)
    with pytest.raises(InvalidInput, match="no data rows"):
        check_rows(empty, SCORED, cols, (0, 5))
