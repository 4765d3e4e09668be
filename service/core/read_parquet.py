"""Parquet files into Arrow tables: the metadata checked before anything is decoded, then batch by batch.

1. The footer: its length (the file's last 8 bytes) at most MAX_PARQUET_FOOTER_BYTES, before it is parsed.
2. The metadata, before any data page is read: the columns (``max_columns``, names as text), the declared rows
   (``max_rows``) and the declared uncompressed size of every row group (``max_decoded_bytes`` and
   ``max_expansion`` against the file's size).
3. Dictionary-encoded text columns, whose declared sizes count each distinct value once (so a file repeating
   one 200-byte value 500,000 times is 26 KB and declares almost nothing): measured from their dictionaries
   and indices, read as dictionaries, so not one value is materialised before the decoded size is known to be
   within the limits.
4. The data, in batches of BATCH_ROWS rows: every batch's decoded size counted against the same limits, every
   text value checked (UTF-8, no NUL, ``max_cell_bytes``) and its row named.

Not checked: a file whose page headers lie about their own sizes against its metadata (pyarrow does not show
page headers); such a page is decompressed whole before its batch is counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from service.core.errors import InvalidInput
from service.core.limits import (
    CELL_OVERHEAD,
    MAX_PARQUET_FOOTER_BYTES,
    SETTING,
    Budget,
    ReadLimits,
    TextProblem,
    cell_too_large,
    check_columns,
    check_name,
    show_name,
    size_text,
    text_bytes,
)

BATCH_ROWS = 65536
_MAGIC = b"PAR1"


def read_parquet(path: Path, name: str, limits: ReadLimits, budget: Budget) -> pa.Table:
    _check_footer(path, name)
    try:
        meta = pq.ParquetFile(path, thrift_string_size_limit=MAX_PARQUET_FOOTER_BYTES,
                              thrift_container_size_limit=1_000_000).metadata
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{name}: not a readable Parquet file ({exc})", field="file") from exc
    _check_metadata(meta, schema, limits, budget)
    try:
        encoded = _dictionary_encoded(meta, schema)
        if encoded:
            _measure_dictionaries(path, meta, encoded, len(schema), limits, budget)
        batches = []
        start = 0
        for batch in pq.ParquetFile(path, metadata=meta).iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            _check_batch(batch, start, limits, budget)
            start += batch.num_rows
            budget.rows(start, f"row {start}")
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=batches[0].schema) if batches else schema.empty_table()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{name}: not a readable Parquet file ({exc})", field="file") from exc


def _dictionary_encoded(meta: pq.FileMetaData, schema: pa.Schema) -> list[str]:
    """Top-level text and bytes columns with a dictionary page in some row group: their declared sizes count
    each distinct value once, so say nothing of what they decode to."""
    wanted = {f.name for f in schema if _is_text(f.type) or _is_bytes(f.type)}
    found = []
    for leaf in range(meta.num_columns):
        path = meta.schema.column(leaf).path
        if path in wanted and any(meta.row_group(g).column(leaf).has_dictionary_page
                                  for g in range(meta.num_row_groups)):
            found.append(path)
    return found


def _measure_dictionaries(path: Path, meta: pq.FileMetaData, names: list[str], width: int, limits: ReadLimits,
                          budget: Budget) -> None:
    """What the dictionary-encoded text columns decode to, from their dictionaries and indices (no value is
    materialised), one column at a time (a reader's dictionary grows with every batch): every cell against
    ``max_cell_bytes`` and the running total against the size limits."""
    done = 0
    for name in names:
        reader = pq.ParquetFile(path, metadata=meta, read_dictionary=[name])
        total = start = 0
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=[name], use_threads=False):
            column = batch.column(0)
            if pa.types.is_dictionary(column.type):
                sizes = pc.binary_length(column.dictionary).take(column.indices)
            else:
                sizes = pc.binary_length(column)
            _check_sizes(sizes, name, start, limits)
            total += int(pc.sum(sizes).as_py() or 0)
            start += batch.num_rows
            budget.check(done + total + CELL_OVERHEAD * start * width, f"rows 1-{start}, column {show_name(name)}")
        done += total


def _check_footer(path: Path, name: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < 12:
            raise InvalidInput(f"{name}: not a readable Parquet file ({size} bytes)", field="file")
        f.seek(size - 8)
        tail = f.read(8)
    if tail[4:] != _MAGIC:
        raise InvalidInput(f"{name}: not a readable Parquet file (it does not end in {_MAGIC.decode()})",
                           field="file")
    footer = int.from_bytes(tail[:4], "little")
    if footer > MAX_PARQUET_FOOTER_BYTES:
        raise InvalidInput(f"{name}: its metadata (footer) is {size_text(footer)}, more than "
                           f"{size_text(MAX_PARQUET_FOOTER_BYTES)}", field="file")
    if footer > size - 12:
        raise InvalidInput(f"{name}: not a readable Parquet file (its footer claims {footer:,} bytes)", field="file")


def _check_metadata(meta: pq.FileMetaData, schema: pa.Schema, limits: ReadLimits, budget: Budget) -> None:
    check_columns(len(schema), limits, "the file", "columns")
    check_columns(meta.num_columns, limits, "the file", "leaf columns (nested fields count one each)")
    for i, f in enumerate(schema, start=1):
        check_name(f.name, f"column {i}")
        depth = _type_depth(f.type)
        if depth > limits.max_json_depth:
            raise InvalidInput(f"column {i} ({show_name(f.name)}): its type nests {depth} levels, more than "
                               f"{limits.max_json_depth} ({SETTING['max_json_depth']})", field="file")
    budget.rows(meta.num_rows, f"the file declares {meta.num_rows:,} rows")
    declared = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        columns = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns))
        declared += max(group.total_byte_size, columns) + CELL_OVERHEAD * group.num_rows * len(schema)
    budget.check(declared, f"the file's metadata (it declares {declared:,} decoded bytes)", verb="would decode")


def _type_depth(kind: pa.DataType) -> int:
    depth, stack = 0, [(kind, 1)]
    while stack:
        t, level = stack.pop()
        depth = max(depth, level)
        stack.extend((t.field(i).type, level + 1) for i in range(t.num_fields))
    return depth


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


# ---------------------------------------------------------------- one batch


def _check_batch(batch: pa.RecordBatch, start: int, limits: ReadLimits, budget: Budget) -> None:
    rows = batch.num_rows
    where = f"rows {start + 1}-{start + rows}" if rows > 1 else f"row {start + 1}"
    total = 0
    for f, column in zip(batch.schema, batch.columns):
        total += _measure(column, f.name, start, limits)
    budget.add(total + CELL_OVERHEAD * rows * batch.num_columns, where)


def _measure(column: pa.Array, name: str, start: int, limits: ReadLimits) -> int:
    """Decoded bytes of one column of a batch (its text as plain values, a dictionary's values as often as they
    are used); InvalidInput naming the row of the first cell that is too large or not acceptable text."""
    kind = column.type
    if pa.types.is_dictionary(kind) and (_is_text(kind.value_type) or _is_bytes(kind.value_type)):
        values, indices = column.dictionary, column.indices
    elif _is_text(kind) or _is_bytes(kind):
        values, indices = column, None
    else:
        _check_nested_text(column, name, start)
        return int(column.nbytes)
    if _is_text(values.type):
        bad = _bad_values(values)
        if bad is not None:
            row = _first(bad if indices is None else bad.take(indices))
            if row is not None:  # (a bad dictionary value no row uses is no problem)
                index = row if indices is None else indices[row].as_py()
                raise InvalidInput(f"row {start + row + 1}, column {show_name(name)}: the value "
                                   f"{_problem(values[index].as_buffer().to_pybytes())}", field="file")
    lengths = pc.binary_length(values)
    sizes = lengths if indices is None else lengths.take(indices)
    _check_sizes(sizes, name, start, limits)
    return int(pc.sum(sizes).as_py() or 0)


def _check_sizes(sizes: pa.Array, name: str, start: int, limits: ReadLimits) -> None:
    biggest = pc.max(sizes).as_py() or 0
    if biggest > limits.max_cell_bytes:
        row = _first(pc.greater(sizes, limits.max_cell_bytes)) or 0
        raise InvalidInput(f"row {start + row + 1}, column {show_name(name)}: the value "
                           f"{cell_too_large(sizes[row].as_py(), limits)}", field="file")


def _first(mask: pa.Array) -> int | None:
    found = pc.index(mask.fill_null(False), True).as_py()
    return None if found is None or found < 0 else int(found)


def _bad_values(values: pa.Array) -> pa.Array | None:
    """A mask of the values of a string array that are not UTF-8 or hold a NUL, or None when all are fine."""
    mask = pc.match_substring(values, "\x00")
    try:
        values.validate(full=True)
    except pa.ArrowInvalid:  # rare: find which, one by one (at most a batch, or a dictionary)
        raw = values.cast(pa.large_binary() if pa.types.is_large_string(values.type) else pa.binary())
        invalid = [item is not None and _problem(item) is not None for item in raw.to_pylist()]
        mask = pc.or_(mask, pa.array(invalid, type=pa.bool_()))
    return mask if pc.any(mask).as_py() else None


def _problem(item: bytes) -> str | None:
    try:
        text_bytes(item.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte 0x{item[exc.start]:02x} at byte {exc.start})"
    except TextProblem as exc:
        return str(exc)
    return None


def _check_nested_text(column: pa.Array, name: str, start: int) -> None:
    """Text inside list / struct / map columns: UTF-8 and no NUL (it reaches the preview); the rows are named
    as the batch's."""
    stack: list[Any] = [column]
    while stack:
        array = stack.pop()
        kind = array.type
        if pa.types.is_dictionary(kind):
            stack.append(array.dictionary)
        elif _is_text(kind):
            bad = _bad_values(array)
            if bad is not None:
                index = _first(bad) or 0
                raise InvalidInput(f"rows {start + 1}-{start + len(column)}, column {show_name(name)}: a nested "
                                   f"value {_problem(array[index].as_buffer().to_pybytes())}", field="file")
        elif pa.types.is_struct(kind):
            stack.extend(array.field(i) for i in range(kind.num_fields))
        elif pa.types.is_map(kind):
            stack.extend((array.keys, array.items))
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            stack.append(array.flatten())
