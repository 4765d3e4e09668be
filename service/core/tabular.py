"""Read and validate tabular training data (CSV, TSV, JSONL, Parquet) without torch or `datasets`.

The API validates uploads with it and the workers turn files into records with it, so both agree on what a
valid file is. Requirements on files:

- CSV and TSV need a header row naming the columns. CSV uses normal quoting (RFC 4180 style); TSV is read with
  ``csv.QUOTE_NONE`` (quotes are text, as in the STS benchmark) and rows may carry extra trailing fields beyond
  the header, which are ignored. A row with fewer fields than the header is an error.
- JSONL (``.jsonl``, or ``.json`` holding one object per line or a JSON array of objects): every row is an object;
  its keys are the column names (a key missing from a row is null).
- Parquet: read as is.

Row numbers in messages are 1-based data rows (the header of a CSV/TSV is not counted).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.core.errors import InvalidInput
from service.core.tasks import TASKS, TaskInfo

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
PREVIEW_ROWS = 5


@dataclass
class TableReport:
    row_count: int
    columns: list[str]
    duplicate_rows: int  # rows equal (on the task's columns) to an earlier row
    preview: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- reading


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = "jsonl" if fmt == "json" else fmt
        if fmt not in FORMATS:
            raise InvalidInput(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})", field="format")
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InvalidInput(f"{path.name}: cannot tell the format from the suffix "
                           f"(use .csv, .tsv, .jsonl, .json or .parquet)", field="format")
    return found


def read_table(path: Path, fmt: str | None = None) -> pa.Table:
    """Read a data file into a pyarrow Table. CSV/TSV values are strings; JSONL and Parquet keep their types."""
    path = Path(path)
    kind = detect_format(path, fmt)
    if kind == "parquet":
        try:
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{path.name}: not a readable Parquet file ({exc})", field="file") from exc
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name}: not UTF-8 text (byte {exc.start})", field="file") from exc
    if kind == "jsonl":
        return _read_json_rows(text, path.name)
    return _read_delimited(text, path.name, delimiter="\t" if kind == "tsv" else ",",
                           quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL)


def _read_delimited(text: str, name: str, *, delimiter: str, quoting: int) -> pa.Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=False)
    try:
        header: list[str] | None = None
        columns: list[list[str]] = []
        row_number = 0
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in fields]
                _check_header(header, name)
                columns = [[] for _ in header]
                continue
            row_number += 1
            if len(fields) < len(header):
                raise InvalidInput(f"row {row_number}: {len(fields)} fields, but the header names {len(header)} "
                                   f"columns ({', '.join(header)})", field="file")
            for values, value in zip(columns, fields):
                values.append(value)
    except csv.Error as exc:
        raise InvalidInput(f"{name}: line {reader.line_num}: {exc}", field="file") from exc
    if header is None:
        raise InvalidInput(f"{name}: the file is empty (a header row naming the columns is required)", field="file")
    return pa.table({h: pa.array(v, type=pa.string()) for h, v in zip(header, columns)})


def _check_header(header: list[str], name: str) -> None:
    for i, h in enumerate(header, start=1):
        if not h:
            raise InvalidInput(f"{name}: header column {i} has no name (a header row is required)", field="file")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise InvalidInput(f"{name}: column {h!r} appears twice in the header", field="file")
        seen.add(h)


def _read_json_rows(text: str, name: str) -> pa.Table:
    stripped = text.lstrip()
    rows: list[Any]
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}", field="file") from exc
    else:
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{name}: line {line_no} is not valid JSON ({exc.msg})", field="file") from exc
    names: dict[str, None] = {}
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise InvalidInput(f"row {i}: expected a JSON object with column names as keys", field="file")
        for key in row:
            names.setdefault(str(key), None)
    if not names:
        raise InvalidInput(f"{name}: no rows (each line must be a JSON object naming its columns)", field="file")
    data = {k: [row.get(k) for row in rows] for k in names}
    return pa.table({k: _to_array(v) for k, v in data.items()})


def _to_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                        type=pa.string())


# ---------------------------------------------------------------- validating


def _task(task: str | TaskInfo) -> TaskInfo:
    if isinstance(task, TaskInfo):
        return task
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r} (choose from {', '.join(TASKS)})", field="task")
    return TASKS[task]


def _column_map(info: TaskInfo, columns: dict[str, str] | None) -> dict[str, str]:
    columns = columns or {}
    return {role: columns.get(role, role) for role in info.columns}


def _text(value: Any, row: int, column: str, field_name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise InvalidInput(f"row {row}, column {column!r}: empty (null) text", field=field_name)
    if not isinstance(value, str):
        raise InvalidInput(f"row {row}, column {column!r}: expected text, got {value!r}", field=field_name)
    if not value.strip():
        raise InvalidInput(f"row {row}, column {column!r}: empty text", field=field_name)
    return value


def _number(value: Any, row: int, column: str, field_name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"row {row}, column {column!r}: {value!r} is not a number", field=field_name)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidInput(f"row {row}, column {column!r}: {value!r} is not a number", field=field_name) from None
    if not math.isfinite(number):
        raise InvalidInput(f"row {row}, column {column!r}: {value!r} is not a finite number", field=field_name)
    return number


def _label(value: Any, row: int, column: str, field_name: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return int(value.strip().lower() == "true")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, AttributeError):
        number = math.nan
    if number not in (0.0, 1.0):
        raise InvalidInput(f"row {row}, column {column!r}: label must be 0 or 1, got {value!r}", field=field_name)
    return int(number)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _validated(table: pa.Table, task: str | TaskInfo, columns: dict[str, str] | None,
               score_range: tuple[float, float], field_name: str) -> dict[str, list[Any]]:
    """Canonical role -> validated values (texts as str, score as raw float, label as int)."""
    info = _task(task)
    mapping = _column_map(info, columns)
    present = list(table.column_names)
    for role, column in mapping.items():
        if column not in present:
            where = f" (mapped from role {role!r})" if column != role else ""
            raise InvalidInput(f"missing column {column!r}{where}; the file has columns: {', '.join(present)}",
                               field=f"data.columns.{role}")
    if table.num_rows == 0:
        raise InvalidInput("the file has no data rows", field=field_name)
    low, high = float(score_range[0]), float(score_range[1])
    out: dict[str, list[Any]] = {}
    for role, column in mapping.items():
        raw = table.column(column).to_pylist()
        if role == info.label_column and info.kind == "scored_pairs":
            values: list[Any] = []
            for i, v in enumerate(raw, start=1):
                x = _number(v, i, column, field_name)
                if not low <= x <= high:
                    raise InvalidInput(f"row {i}, column {column!r}: {_fmt(x)} is outside score_range "
                                       f"[{_fmt(low)}, {_fmt(high)}]", field=field_name)
                values.append(x)
        elif role == info.label_column:
            values = [_label(v, i, column, field_name) for i, v in enumerate(raw, start=1)]
        else:
            values = [_text(v, i, column, field_name) for i, v in enumerate(raw, start=1)]
        out[role] = values
    return out


def check_rows(table: pa.Table, task: str | TaskInfo, columns: dict[str, str] | None = None,
               score_range: tuple[float, float] = (0.0, 1.0), *, field: str = "file") -> TableReport:
    """Validate every row for `task`; raise InvalidInput naming the first bad row and column.

    `columns` maps the task's roles to the file's column names (identity for roles not given); `field` is the
    input named in errors about row contents.
    """
    values = _validated(table, task, columns, score_range, field)
    roles = list(values)
    seen: set[tuple[Any, ...]] = set()
    duplicates = 0
    for row in zip(*(values[r] for r in roles)):
        if row in seen:
            duplicates += 1
        else:
            seen.add(row)
    preview = table.slice(0, PREVIEW_ROWS).to_pylist()
    return TableReport(row_count=table.num_rows, columns=list(table.column_names), duplicate_rows=duplicates,
                       preview=preview)


def to_records(table: pa.Table, task: str | TaskInfo, columns: dict[str, str] | None = None,
               score_range: tuple[float, float] = (0.0, 1.0), *, field: str = "file") -> dict[str, list[Any]]:
    """Validated columns under their canonical role names, in the task's order; scores rescaled to 0..1."""
    info = _task(task)
    values = _validated(table, info, columns, score_range, field)
    if info.kind == "scored_pairs" and info.label_column is not None:
        low, high = float(score_range[0]), float(score_range[1])
        values[info.label_column] = [(x - low) / (high - low) for x in values[info.label_column]]
    return {role: values[role] for role in info.columns}
