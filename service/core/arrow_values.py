"""Arrow columns as Python values, for every type a data file can hold (above all Parquet's).

Arrow holds values Python cannot: a timestamp, date or duration past Python's datetime range (a date32 of
2**31 - 1 days, a timestamp[ms] 146 million years out), which `to_pylist` answers with OverflowError or
ValueError. Two uses, two answers:

- a column a task reads (a sentence, a score, a label): every value must convert, else InvalidInput (422)
  naming the column and its type;
- the preview of the first rows: a value that cannot convert is shown as Arrow prints it (the column cast to
  text), or, where Arrow has no such cast (a list or struct of them), as ``<TYPE value out of range>``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from service.core.errors import InvalidInput

# What `to_pylist` / `as_py` raise for a value Python's types cannot hold.
CONVERSION_ERRORS = (pa.ArrowException, OverflowError, ValueError, TypeError, ArithmeticError)


def column_values(table: pa.Table, name: str, *, field: str) -> list[Any]:
    """Every value of column `name` as Python; InvalidInput naming the column when some cannot be read."""
    column = table.column(name)
    try:
        return column.to_pylist()
    except CONVERSION_ERRORS as exc:
        raise InvalidInput(f"column {name!r}: its {column.type} values cannot be read ({_reason(exc)})",
                           field=field) from exc


def preview_rows(table: pa.Table, rows: int) -> list[dict[str, Any]]:
    """The first `rows` rows as dicts, whatever the column types (never raises on a value out of range)."""
    head = table.slice(0, rows)
    columns = {name: _shown(head.column(name)) for name in head.column_names}
    return [{name: values[i] for name, values in columns.items()} for i in range(head.num_rows)]


def _shown(column: pa.ChunkedArray) -> list[Any]:
    try:
        return column.to_pylist()
    except CONVERSION_ERRORS:
        pass
    try:
        return column.cast(pa.string()).to_pylist()  # Arrow prints out-of-range values itself
    except CONVERSION_ERRORS:
        return [_scalar(value, column.type) for value in column]


def _scalar(value: pa.Scalar, kind: pa.DataType) -> Any:
    try:
        return value.as_py()
    except CONVERSION_ERRORS:
        return f"<{kind} value out of range>"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"
