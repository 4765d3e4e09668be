"""Read and validate tabular training data (CSV, TSV, JSONL, Parquet) without torch or `datasets`.

The API validates uploads with it and the workers turn files into records with it, so both agree on what a
valid file is. Requirements on files:

- CSV and TSV have a header row naming the columns, or, read with ``header=False``, none: then the task's roles
  are given by 0-based position (``{"sentence1": 5, "sentence2": 6, "score": 4}``, the STS benchmark's own
  layout) and only those fields are read, as columns named by their position ("4", "5", "6"). CSV uses normal
  quoting (RFC 4180 style); TSV is read with ``csv.QUOTE_NONE`` (quotes are text, as in the STS benchmark). Rows
  may carry extra trailing fields beyond the header (or the highest position asked for), which are ignored; a
  row with fewer fields than the header (or too few for a position) is an error.
- JSONL (``.jsonl``, or ``.json`` holding one object per line or a JSON array of objects): every row is an object;
  its keys are the column names (a key missing from a row is null).
- Parquet: read as is (its metadata checked first, then batch by batch: core/read_parquet.py).

Every file is read against a `ReadLimits` (rows, decoded bytes, columns, bytes per cell and per line, JSON
nesting) and every text value and column name must be text: no NUL, no lone UTF-16 surrogate, valid UTF-8
(core/limits.py; the streaming readers are core/read_text.py and core/read_parquet.py).

Row numbers in messages are 1-based data rows (the header of a CSV/TSV is not counted). A column in messages is
its name in quotes (``column 'score'``) or, in a file without a header, its bare position (``column 4``).

`columns` (a study's ``data.columns``, an upload's ``columns``) maps the task's roles to column names (roles not
given map to themselves) or, for a file without a header, to positions (every role given). `column_map` checks
one against the other; a mismatch is an InvalidInput naming ``data.columns``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pyarrow as pa

from service.core import numeric_limits
from service.core.arrow_values import column_values, preview_rows
from service.core.errors import InvalidInput
from service.core.limits import DEFAULT_LIMITS, Budget, ReadLimits
from service.core.read_parquet import read_parquet
from service.core.read_text import HEADERLESS_KEY, read_delimited, read_json_rows
from service.core.tasks import TASKS, TaskInfo

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
PREVIEW_ROWS = 5
_HEADERLESS = HEADERLESS_KEY  # schema metadata key marking a table read with header=False

Column = Union[str, int]  # a column name, or a 0-based position in a file without a header


@dataclass
class TableReport:
    row_count: int
    columns: list[str]
    duplicate_rows: int  # rows equal (on the task's columns) to an earlier row
    preview: list[dict[str, Any]] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # column name -> the task role it was checked as


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


def read_table(path: Path, fmt: str | None = None, *, header: bool = True,
               columns: Mapping[str, Column] | None = None, limits: ReadLimits | None = None,
               budget: Budget | None = None, name: str | None = None) -> pa.Table:
    """Read a data file into a pyarrow Table. CSV/TSV values are strings; JSONL and Parquet keep their types.

    ``header=False`` (CSV and TSV only): the file has no header row and ``columns`` gives each role's 0-based
    position; the table holds just those fields, as columns named by position. With a header, ``columns`` is
    not needed to read (check_rows / to_records map it) but a position in it is refused here already.

    ``limits`` (default: the settings' defaults) bound what the file may decode to (core/limits.py): the file
    is streamed and refused at the first limit it passes (PayloadTooLarge for its rows or decoded size,
    InvalidInput naming the row and column for a cell, a line, a column count, nesting or text that is not
    text), before it is held whole.

    ``budget``: rows and decoded bytes already counted, to share one budget among several files read as one data
    set (a hub data set's split: workers/hub_data.py); default: a fresh one for this file. ``name``: the file's
    name in messages (default: its own).
    """
    path = Path(path)
    kind = detect_format(Path(name) if name else path, fmt)
    positions = _positions(columns, header)
    if not header and kind not in ("csv", "tsv"):
        raise InvalidInput(f"{path.name}: header=false applies to CSV and TSV files only (a {kind} file names "
                           f"its columns)", field="header")
    limits = limits or DEFAULT_LIMITS
    budget = budget or Budget(limits, path.stat().st_size)
    name = name or path.name
    if kind == "parquet":
        return read_parquet(path, name, limits, budget)
    if kind == "jsonl":
        return read_json_rows(path, name, limits, budget)
    return read_delimited(path, name, delimiter="\t" if kind == "tsv" else ",",
                          quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL, positions=positions,
                          limits=limits, budget=budget)


def _positions(columns: Mapping[str, Column] | None, header: bool) -> dict[int, str] | None:
    """None for a file with a header (after refusing positions); else position -> the role(s) read from it."""
    if header:
        if columns:
            _check_names(columns, "data.columns")
        return None
    if not columns:
        raise InvalidInput('a file without a header needs columns giving each role\'s 0-based position, e.g. '
                           '{"sentence1": 5, "sentence2": 6, "score": 4}', field="data.columns")
    _check_positions(columns, "data.columns")
    out: dict[int, str] = {}
    for role, pos in sorted(columns.items(), key=lambda kv: int(kv[1])):
        out[int(pos)] = f"{out[int(pos)]}, {role}" if int(pos) in out else role
    return out


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_names(columns: Mapping[str, Any], field_name: str) -> None:
    for role, column in columns.items():
        if _is_position(column):
            raise InvalidInput(f"{role}: {column} is a position, but positions are only for a file without a "
                               f"header (header=false); this file's header names its columns, so give the name",
                               field=field_name)
        if not isinstance(column, str) or not column:
            raise InvalidInput(f"{role}: expected a column name, got {column!r}", field=field_name)


# A 0-based column position, in a study's data.columns or an upload's columns (core/numeric_limits.py).
POSITION_BOUND = numeric_limits.limit("upload.columns.*")


def _check_positions(columns: Mapping[str, Any], field_name: str) -> None:
    for role, column in columns.items():
        if isinstance(column, str):
            raise InvalidInput(f"{role}: {column!r} is a name, but a file without a header (header=false) has "
                               f"no column names; give the 0-based position, e.g. {{\"{role}\": 0}}",
                               field=field_name)
        if not _is_position(column) or column < 0:
            raise InvalidInput(f"{role}: expected a 0-based position (an integer >= 0), got {column!r}",
                               field=field_name)
        problem = POSITION_BOUND.problem(column)
        if problem is not None:
            raise InvalidInput(f"{role}: {problem}", field=field_name)


def column_map(task: str | TaskInfo, columns: Mapping[str, Column] | None = None, *, header: bool = True,
               field: str = "data.columns") -> dict[str, Column]:
    """The task's roles -> column name (header) or 0-based position (no header), in the task's order.

    With a header, roles not given map to the column of their own name; without one, every role needs a
    position. A role the task lacks, a position with a header or a name without one: InvalidInput naming
    `field`.
    """
    info = _task(task)
    columns = dict(columns or {})
    for role in columns:
        if role not in info.columns:
            raise InvalidInput(f"{role!r} is not a column of task {info.kind} (expected {', '.join(info.columns)})",
                               field=field)
    if header:
        _check_names(columns, field)
        return {role: columns.get(role, role) for role in info.columns}
    _check_positions(columns, field)
    missing = [role for role in info.columns if role not in columns]
    if missing:
        example = ", ".join(f'"{role}": {i}' for i, role in enumerate(info.columns))
        raise InvalidInput(f"a file without a header needs the 0-based position of every column of task "
                           f"{info.kind}; missing {', '.join(missing)} (e.g. {{{example}}})", field=field)
    return {role: columns[role] for role in info.columns}


def _headerless(table: pa.Table) -> bool:
    return bool(table.schema.metadata) and table.schema.metadata.get(_HEADERLESS) == b"true"


# ---------------------------------------------------------------- validating


def _task(task: str | TaskInfo) -> TaskInfo:
    if isinstance(task, TaskInfo):
        return task
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r} (choose from {', '.join(TASKS)})", field="task")
    return TASKS[task]


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


def _key(column: Column) -> str:
    """The table column holding `column` (a headerless file's columns are named by position)."""
    return str(column)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _validated(table: pa.Table, task: str | TaskInfo, columns: Mapping[str, Column] | None,
               score_range: tuple[float, float], field_name: str) -> dict[str, list[Any]]:
    """Canonical role -> validated values (texts as str, score as raw float, label as int)."""
    info = _task(task)
    mapping = column_map(info, columns, header=not _headerless(table))
    present = list(table.column_names)
    for role, column in mapping.items():
        if _key(column) not in present:
            where = f" (mapped from role {role!r})" if column != role else ""
            raise InvalidInput(f"missing column {column!r}{where}; the file has columns: {', '.join(present)}",
                               field=f"data.columns.{role}")
    if table.num_rows == 0:
        raise InvalidInput("the file has no data rows", field=field_name)
    low, high = float(score_range[0]), float(score_range[1])
    out: dict[str, list[Any]] = {}
    for role, column in mapping.items():
        raw = column_values(table, _key(column), field=field_name)
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


def check_rows(table: pa.Table, task: str | TaskInfo, columns: Mapping[str, Column] | None = None,
               score_range: tuple[float, float] = (0.0, 1.0), *, field: str = "file") -> TableReport:
    """Validate every row for `task`; raise InvalidInput naming the first bad row and column.

    `columns` maps the task's roles to the file's column names (identity for roles not given), or to positions
    for a table read with ``header=False``; `field` is the input named in errors about row contents.
    """
    info = _task(task)
    values = _validated(table, info, columns, score_range, field)
    roles = list(values)
    seen: set[tuple[Any, ...]] = set()
    duplicates = 0
    for row in zip(*(values[r] for r in roles)):
        if row in seen:
            duplicates += 1
        else:
            seen.add(row)
    preview = preview_rows(table, PREVIEW_ROWS)
    mapping = column_map(info, columns, header=not _headerless(table))
    names = {_key(column): role for role, column in mapping.items()}
    return TableReport(row_count=table.num_rows, columns=list(table.column_names), duplicate_rows=duplicates,
                       preview=preview, roles={n: names[n] for n in table.column_names if n in names})


def to_records(table: pa.Table, task: str | TaskInfo, columns: Mapping[str, Column] | None = None,
               score_range: tuple[float, float] = (0.0, 1.0), *, field: str = "file") -> dict[str, list[Any]]:
    """Validated columns under their canonical role names, in the task's order; scores rescaled to 0..1."""
    info = _task(task)
    values = _validated(table, info, columns, score_range, field)
    if info.kind == "scored_pairs" and info.label_column is not None:
        low, high = float(score_range[0]), float(score_range[1])
        values[info.label_column] = [(x - low) / (high - low) for x in values[info.label_column]]
    return {role: values[role] for role in info.columns}
