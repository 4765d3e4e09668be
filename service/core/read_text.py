"""CSV, TSV and JSONL files into Arrow tables, streamed: a bounded line at a time, counted against ReadLimits.

Nothing is read whole: lines come one at a time (each at most ``max_line_bytes``), rows are counted as they are
read, values are checked as text (no NUL, no lone surrogate, UTF-8) and counted into the decoded size, and
columns are turned into Arrow arrays every CHUNK_ROWS rows, so the Python objects held at once stay small. The
first limit passed raises (PayloadTooLarge or InvalidInput naming the row and column); see core/limits.py.

CSV and TSV are decoded with ``errors="surrogateescape"``, so a byte that is not UTF-8 is found in its cell (row
and column) rather than as an offset in the file. JSONL lines are bytes until they are checked: a line too
long, bytes that are not UTF-8, nesting deeper than ``max_json_depth`` (found without recursion, before
json.loads) and numbers Python refuses to parse are each an InvalidInput naming the row.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from service.core.errors import InvalidInput
from service.core.limits import (
    CELL_OVERHEAD,
    SETTING,
    Budget,
    ReadLimits,
    TextProblem,
    cell_too_large,
    check_cell,
    check_columns,
    check_name,
    line_too_long,
    show_name,
    size_text,
    text_bytes,
)
from service.core.text_checks import json_too_deep

CHUNK_ROWS = 8192  # rows gathered as Python values before they become Arrow arrays
CHUNK_BYTES = 16 * 1024 * 1024  # ... or this many decoded bytes, whichever comes first
_BOM = b"\xef\xbb\xbf"
HEADERLESS_KEY = b"stsweep.headerless"  # schema metadata marking a table read with header=False


def _where(row: int, line: int) -> str:
    return f"row {row}" if row == line else f"row {row} (line {line})"


# ---------------------------------------------------------------- CSV and TSV


class _Lines:
    """Physical lines of a text file, each at most ``max_line_bytes`` (without its line ending)."""

    def __init__(self, f: IO[str], limits: ReadLimits, *, header: bool) -> None:
        self._f = f
        self._limits = limits
        self.header = header
        self.number = 0
        self.row = 0  # data rows read so far, for messages

    def where(self) -> str:
        return "the header" if self.header and not self.row else f"row {self.row + 1} (line {self.number})"

    def __iter__(self) -> Iterator[str]:
        limit = self._limits.max_line_bytes
        while True:
            line = self._f.readline(limit + 2)
            if not line:
                return
            self.number += 1
            content = line.rstrip("\r\n")
            size = len(content) if content.isascii() else len(content.encode("utf-8", "surrogateescape"))
            if size > limit:
                raise line_too_long(-1 if len(content) > limit else size, self._limits, self.where())
            yield line


class _StringColumns:
    """Columns of text gathered row by row and turned into Arrow string arrays a chunk at a time."""

    def __init__(self, count: int) -> None:
        self.values: list[list[str]] = [[] for _ in range(count)]
        self.chunks: list[list[pa.Array]] = [[] for _ in range(count)]
        self.pending_bytes = 0

    def add(self, fields: list[str], nbytes: int) -> None:
        for values, value in zip(self.values, fields):
            values.append(value)
        self.pending_bytes += nbytes
        if len(self.values[0]) >= CHUNK_ROWS or self.pending_bytes >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.values and self.values[0]:
            for chunks, values in zip(self.chunks, self.values):
                chunks.append(pa.array(values, type=pa.string()))
                values.clear()
        self.pending_bytes = 0

    def arrays(self) -> list[pa.ChunkedArray]:
        self.flush()
        return [pa.chunked_array(chunks, type=pa.string()) for chunks in self.chunks]


def read_delimited(path: Path, name: str, *, delimiter: str, quoting: int, positions: dict[int, str] | None,
                   limits: ReadLimits, budget: Budget) -> pa.Table:
    """A CSV / TSV file with a header row (``positions`` None) or without one (the fields at ``positions``)."""
    # The csv module's own limit (characters, process-wide) stops a runaway quoted field while it grows. It is
    # above the longest line, so a field within one line reaches the per-cell check, which names its column.
    csv.field_size_limit(max(limits.max_cell_bytes, limits.max_line_bytes) + 1)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _Lines(f, limits, header=positions is None)
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=False)
        try:
            if positions is None:
                return _with_header(reader, lines, name, limits, budget)
            return _without_header(reader, lines, positions, limits, budget)
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                longest = max(limits.max_cell_bytes, limits.max_line_bytes)
                raise InvalidInput(f"{lines.where()}: a quoted field runs on past {longest:,} characters, over the "
                                   f"limit of {size_text(limits.max_cell_bytes)} per cell "
                                   f"({SETTING['max_cell_bytes']})", field="file") from exc
            raise InvalidInput(f"{name}: line {reader.line_num}: {exc}", field="file") from exc


def _non_blank(reader: Any) -> Iterator[list[str]]:
    """The rows of a CSV / TSV reader that hold anything."""
    for fields in reader:
        if fields and (len(fields) > 1 or fields[0].strip()):
            yield fields


def _data_rows(rows: Iterator[list[str]], lines: _Lines, budget: Budget) -> Iterator[tuple[int, list[str]]]:
    """Data rows numbered from 1 (for messages and `lines`), each counted against the row limit."""
    for row, fields in enumerate(rows, start=1):
        lines.row = row
        budget.rows(row, f"row {row}")
        yield row, fields


def _cells(fields: list[str], row: int, limits: ReadLimits, column: Any) -> list[int]:
    """Each field's UTF-8 size; InvalidInput naming the row and column (``column(i)``) of the first bad one."""
    sizes = []
    for i, value in enumerate(fields):
        try:
            sizes.append(check_cell(value, limits, from_bytes=True))
        except TextProblem as exc:
            raise InvalidInput(f"row {row}, column {column(i)}: the value {exc}", field="file") from None
    return sizes


def _with_header(reader: Any, lines: _Lines, name: str, limits: ReadLimits, budget: Budget) -> pa.Table:
    rows = _non_blank(reader)
    first = next(rows, None)
    if first is None:
        raise InvalidInput(f"{name}: the file is empty (a header row naming the columns is required)", field="file")
    check_columns(len(first), limits, "the header", "columns")
    header = [h.strip() for h in first]
    for i, h in enumerate(header, start=1):
        check_name(h, f"the header, column {i}", from_bytes=True)
    _check_header(header, name)
    width = len(header)
    columns = _StringColumns(width)
    for row, fields in _data_rows(rows, lines, budget):
        if len(fields) < width:
            raise InvalidInput(f"row {row}: {len(fields)} fields, but the header names {width} "
                               f"columns ({', '.join(header)})", field="file")
        check_columns(len(fields), limits, f"row {row}", "fields")
        sizes = _cells(fields, row, limits,
                       lambda i: show_name(header[i]) if i < width else f"{i + 1} (a field past the header)")
        kept = sum(sizes[:width]) + CELL_OVERHEAD * width
        budget.add(kept, f"row {row}")
        columns.add(fields, kept)
    return pa.table(dict(zip(header, columns.arrays())))


def _without_header(reader: Any, lines: _Lines, positions: dict[int, str], limits: ReadLimits,
                    budget: Budget) -> pa.Table:
    """Every row is data; the fields at `positions` are kept (extra trailing fields checked, then ignored)."""
    wanted = sorted(positions)
    needed = wanted[-1] + 1
    check_columns(needed, limits, "data.columns", "positions")
    columns = _StringColumns(len(wanted))
    for row, fields in _data_rows(_non_blank(reader), lines, budget):
        if len(fields) < needed:
            short = next(p for p in wanted if p >= len(fields))
            raise InvalidInput(f"row {row}: {len(fields)} fields, but column {short} ({positions[short]}) needs "
                               f"at least {short + 1} (positions count from 0)", field="file")
        check_columns(len(fields), limits, f"row {row}", "fields")
        sizes = _cells(fields, row, limits, str)
        kept = sum(sizes[p] for p in wanted) + CELL_OVERHEAD * len(wanted)
        budget.add(kept, f"row {row}")
        columns.add([fields[p] for p in wanted], kept)
    schema = pa.schema([pa.field(str(p), pa.string()) for p in wanted], metadata={HEADERLESS_KEY: b"true"})
    return pa.table(columns.arrays(), schema=schema)


def _check_header(header: list[str], name: str) -> None:
    for i, h in enumerate(header, start=1):
        if not h:
            raise InvalidInput(f"{name}: header column {i} has no name (a header row is required)", field="file")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise InvalidInput(f"{name}: column {show_name(h)} appears twice in the header", field="file")
        seen.add(h)


# ---------------------------------------------------------------- JSONL (and a JSON array of objects)


class _JsonColumns:
    """Rows of JSON objects gathered column by column; a key first seen in a later row is null before it.
    Types are inferred per chunk and unified at the end (mixed types become text, as pa.array would)."""

    def __init__(self, limits: ReadLimits, budget: Budget) -> None:
        self.limits = limits
        self.budget = budget
        self.values: dict[str, list[Any]] = {}
        self.chunks: dict[str, list[pa.Array]] = {}
        self.rows = 0  # rows in chunks already built
        self.pending = 0  # rows in `values`
        self.pending_bytes = 0

    def add(self, obj: Any, row: int, where: str) -> None:
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where}: expected a JSON object with column names as keys", field="file")
        size = 0
        for key, value in obj.items():
            values = self.values.get(key)
            if values is None:
                check_name(key, f"{where}, key {show_name(key)}")
                check_columns(len(self.values) + 1, self.limits, where, "distinct keys")
                earlier = self.rows + self.pending  # rows before this one, null in the new column
                self.budget.add(CELL_OVERHEAD * earlier, where)
                self.chunks[key] = [pa.nulls(self.rows)] if self.rows else []
                values = self.values[key] = [None] * self.pending
            try:
                size += _cell_bytes(value, self.limits, 1)
            except TextProblem as exc:
                raise InvalidInput(f"{where}, column {show_name(key)}: the value {exc}", field="file") from None
            values.append(value)
        self.pending += 1
        missing = 0
        for values in self.values.values():
            if len(values) < self.pending:
                values.append(None)
                missing += 1
        nbytes = size + CELL_OVERHEAD * (len(obj) + missing)
        self.budget.add(nbytes, where)
        self.pending_bytes += nbytes
        if self.pending >= CHUNK_ROWS or self.pending_bytes >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        for key, values in self.values.items():
            self.chunks[key].append(_to_array(values))
            values.clear()
        self.rows += self.pending
        self.pending = 0
        self.pending_bytes = 0

    def table(self, name: str) -> pa.Table:
        self.flush()
        if not self.chunks:
            raise InvalidInput(f"{name}: no rows (each line must be a JSON object naming its columns)", field="file")
        return pa.table({key: _unify(chunks) for key, chunks in self.chunks.items()})


def _cell_bytes(value: Any, limits: ReadLimits, depth: int) -> int:
    """A JSON value's decoded size (text bytes, CELL_OVERHEAD per other value); every string in it (keys too)
    checked as text. Nested values are walked without recursion; `depth` is the value's container depth."""
    if isinstance(value, str):
        return check_cell(value, limits)
    if not isinstance(value, (dict, list)):
        return CELL_OVERHEAD
    size = 0
    stack: list[tuple[Any, int]] = [(value, depth + 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            size += text_bytes(item)
        elif isinstance(item, (dict, list)):
            if level > limits.max_json_depth:
                raise TextProblem(f"nests JSON deeper than {limits.max_json_depth} levels, the limit "
                                  f"({SETTING['max_json_depth']})")
            if isinstance(item, dict):
                for key, child in item.items():
                    size += text_bytes(key)
                    stack.append((child, level + 1))
            else:
                stack.extend((child, level + 1) for child in item)
        else:
            size += CELL_OVERHEAD
        if size > limits.max_cell_bytes:
            raise TextProblem(cell_too_large(None, limits))
    return size


def _nested_too_deep(where: str, limits: ReadLimits) -> InvalidInput:
    return InvalidInput(f"{where}: JSON nested deeper than {limits.max_json_depth} levels, the limit "
                        f"({SETTING['max_json_depth']})", field="file")


def _to_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return _as_text(values)


def _as_text(values: list[Any]) -> pa.Array:
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                    type=pa.string())


def _unify(chunks: list[pa.Array]) -> pa.ChunkedArray:
    """One column from its chunks: one type as is, whole and real numbers as float64, anything else as text
    (each non-text value as its JSON), which is what pa.array does with the whole column's values."""
    types = {c.type for c in chunks} - {pa.null()}
    if not types:
        return pa.chunked_array(chunks, type=pa.null())
    if len(types) == 1:
        [kind] = types
        return pa.chunked_array([pa.nulls(len(c), kind) if c.type == pa.null() else c for c in chunks], type=kind)
    if types <= {pa.int64(), pa.float64()}:
        return pa.chunked_array([c.cast(pa.float64()) for c in chunks], type=pa.float64())
    return pa.chunked_array([c if c.type == pa.string() else _as_text(c.to_pylist()) for c in chunks],
                            type=pa.string())


def read_json_rows(path: Path, name: str, limits: ReadLimits, budget: Budget) -> pa.Table:
    """JSONL (one object per line), or a JSON array of objects (a file whose first character is ``[``)."""
    columns = _JsonColumns(limits, budget)
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(_BOM).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            _json_array(path, name, limits, budget, columns)
        else:
            _json_lines(f, name, limits, budget, columns)
    return columns.table(name)


def _json_lines(f: IO[bytes], name: str, limits: ReadLimits, budget: Budget, columns: _JsonColumns) -> None:
    limit = limits.max_line_bytes
    line_no = row = 0
    while True:
        raw = f.readline(limit + 2)
        if not raw:
            return
        line_no += 1
        if line_no == 1:
            raw = raw.removeprefix(_BOM)
        content = raw.rstrip(b"\r\n")
        if len(content) > limit:
            raise line_too_long(-1, limits, f"row {row + 1} (line {line_no})")
        if not content.strip():
            continue
        row += 1
        where = _where(row, line_no)
        budget.rows(row, where)
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{where}: not UTF-8 text (byte 0x{content[exc.start]:02x} at byte {exc.start} of "
                               "the line)", field="file") from None
        if json_too_deep(text, limits.max_json_depth):
            raise _nested_too_deep(where, limits)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{name}: line {line_no} is not valid JSON ({exc.msg})", field="file") from exc
        except (ValueError, RecursionError) as exc:  # e.g. an integer of more digits than Python converts
            raise InvalidInput(f"{where}: not valid JSON here ({exc})", field="file") from None
        columns.add(obj, row, where)


_CHUNK_CHARS = 1024 * 1024
_SPACE = re.compile(r"[ \t\r\n]*")
_NEAR_END = 16  # a parse error this close to the end of what was read may just be the element cut short


def _json_array(path: Path, name: str, limits: ReadLimits, budget: Budget, columns: _JsonColumns) -> None:
    """A JSON array of objects, decoded one element at a time (each at most ``max_line_bytes``)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as f:
        buf, pos, eof, row = "", 0, False, 0

        def more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            try:
                chunk = f.read(max(_CHUNK_CHARS, len(buf) - pos))
            except UnicodeDecodeError:
                raise InvalidInput(f"{name}: not UTF-8 text (near row {row + 1})", field="file") from None
            buf, pos = buf[pos:] + chunk, 0
            eof = not chunk
            return bool(chunk)

        def skip_space() -> str:
            nonlocal pos
            while True:
                pos = _SPACE.match(buf, pos).end()  # type: ignore[union-attr]  # matches the empty string too
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        if skip_space() != "[":
            raise InvalidInput(f"{name}: expected a JSON array of objects", field="file")
        pos += 1
        if skip_space() == "]":
            pos += 1
        else:
            while True:
                row += 1
                where = f"row {row}"
                budget.rows(row, where)
                if skip_space() == "":
                    raise InvalidInput(f"{name}: the JSON array is not closed", field="file")
                while True:  # the parser recurses, but only as deep as the interpreter allows (guarded);
                    try:  # the element's depth is then checked against the limit by columns.add's walk
                        obj, end = decoder.raw_decode(buf, pos)
                        if end == len(buf) and not eof:
                            raise json.JSONDecodeError("cut short", buf, end)
                        break
                    except json.JSONDecodeError as exc:
                        cut = exc.pos >= len(buf) - _NEAR_END or exc.msg.startswith("Unterminated string")
                        if eof or not cut:
                            raise InvalidInput(f"{name}: {where} is not valid JSON ({exc.msg})", field="file") from None
                        if len(buf) - pos > limits.max_line_bytes:
                            raise line_too_long(-1, limits, where) from None
                        more()
                    except RecursionError:
                        raise _nested_too_deep(where, limits) from None
                    except ValueError as exc:
                        raise InvalidInput(f"{where}: not valid JSON here ({exc})", field="file") from None
                if end - pos > limits.max_line_bytes:
                    raise line_too_long(end - pos, limits, where)
                pos = end
                columns.add(obj, row, where)
                sep = skip_space()
                pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    raise InvalidInput(f"{name}: after {where}, expected ',' or ']' in the JSON array", field="file")
        if skip_space() != "":
            raise InvalidInput(f"{name}: text after the JSON array", field="file")
