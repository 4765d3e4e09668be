"""Limits on reading a data file, and the checks every text value and name in it passes.

The readers in service/core/tabular.py (the API's upload check and the workers' loader) take a `ReadLimits`
(built from the settings at an entry point: `Settings.read_limits()`) and count against it while they decode,
so a file is refused as soon as it passes a limit, never after it was held whole:

- the whole file: its rows (``max_rows``) and its decoded size (``max_decoded_bytes``; every cell counts
  ``CELL_OVERHEAD`` bytes plus the UTF-8 bytes of its text), also measured against the file's own size
  (``max_expansion``: more than that many times the bytes on disk, once past ``EXPANSION_FLOOR``, is a
  compression bomb). These raise PayloadTooLarge (413).
- each row and cell: its columns (``max_columns``), a line of CSV / TSV / JSONL (``max_line_bytes``), a cell
  (``max_cell_bytes``), a column name (``MAX_NAME_BYTES``), the nesting of a JSON row (``max_json_depth``), and
  text that is not text: a NUL character, a lone UTF-16 surrogate (a JSON ``"\\ud800"`` escape) or bytes that
  are not UTF-8. These raise InvalidInput (422) naming the row and column.

Messages name the limit and the setting that raises it (``STSWEEP_MAX_ROWS``), though core reads no settings.
What is not text and how deep JSON nests are decided by core/text_checks.py, as for a request body.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from service.core.errors import InvalidInput, PayloadTooLarge
from service.core.text_checks import NUL, not_text_at


KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CELL_OVERHEAD = 8  # bytes every cell counts on top of its text (an Arrow offset, a pointer): empty cells add up
EXPANSION_FLOOR = 16 * MiB  # below this decoded size the expansion ratio is not checked (small files are fine)
MAX_NAME_BYTES = 1024  # a column name (CSV / TSV header, JSON key, Parquet field)
MAX_PARQUET_FOOTER_BYTES = 8 * MiB  # a Parquet file's metadata, refused before it is parsed


@dataclass(frozen=True)
class ReadLimits:
    """What one data file may hold once decoded. The defaults are the settings' defaults (README)."""

    max_decoded_bytes: int = 1 * GiB
    max_rows: int = 5_000_000
    max_columns: int = 1_000
    max_cell_bytes: int = 1 * MiB
    max_line_bytes: int = 8 * MiB
    max_json_depth: int = 32
    max_expansion: int = 100
    # The bytes of one upload as sent, and of the files a hub data set's split is read from, together, checked
    # before any of them is read (workers/hub_data.py).
    max_upload_bytes: int = 512 * MiB

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ReadLimits.{f.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = ReadLimits()

SETTING = {  # the environment variable that sets each limit, for messages
    "max_decoded_bytes": "STSWEEP_MAX_DECODED_BYTES",
    "max_rows": "STSWEEP_MAX_ROWS",
    "max_columns": "STSWEEP_MAX_COLUMNS",
    "max_cell_bytes": "STSWEEP_MAX_CELL_BYTES",
    "max_line_bytes": "STSWEEP_MAX_LINE_BYTES",
    "max_json_depth": "STSWEEP_MAX_JSONL_DEPTH",
    "max_expansion": "STSWEEP_MAX_EXPANSION",
    "max_upload_bytes": "STSWEEP_MAX_UPLOAD_BYTES",
}


def size_text(n: int) -> str:
    """Bytes for a message: exact, with a binary unit when round (``1073741824 bytes (1 GiB)``)."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n:,} bytes ({n // unit} {name})"
    return f"{n:,} bytes"


def show_name(name: str, limit: int = 60) -> str:
    """A column name quoted for a message: repr (so NULs and surrogates are escapes), long names cut."""
    return repr(name if len(name) <= limit else name[:limit] + "…")


# ---------------------------------------------------------------- the whole file


class Budget:
    """Rows and decoded bytes of one file, counted as it is read; PayloadTooLarge (field ``file``) past a limit."""

    def __init__(self, limits: ReadLimits, file_size: int) -> None:
        self.limits = limits
        self.file_size = max(file_size, 1)
        self.decoded = 0

    def rows(self, count: int, where: str) -> None:
        """`count` rows read (or declared) so far."""
        if count > self.limits.max_rows:
            raise PayloadTooLarge(f"{where}: more than {self.limits.max_rows:,} rows, the limit "
                                  f"({SETTING['max_rows']})", field="file")

    def add(self, nbytes: int, where: str) -> None:
        self.decoded += nbytes
        self.check(self.decoded, where)

    def check(self, decoded: int, where: str, verb: str = "decodes") -> None:
        """Whether a decoded size (so far, or as a file declares it) is within both size limits."""
        limits = self.limits
        if decoded > limits.max_decoded_bytes:
            raise PayloadTooLarge(f"{where}: the data {verb} to more than {size_text(limits.max_decoded_bytes)}, "
                                  f"the limit ({SETTING['max_decoded_bytes']})", field="file")
        if decoded > EXPANSION_FLOOR and decoded > limits.max_expansion * self.file_size:
            raise PayloadTooLarge(f"{where}: the data {verb} to more than {limits.max_expansion} times the "
                                  f"file's own {size_text(self.file_size)}, the limit ({SETTING['max_expansion']}; "
                                  f"a compression bomb?)", field="file")


# ---------------------------------------------------------------- text


class TextProblem(ValueError):
    """A value that is not acceptable text; the reader adds where it is (row, column)."""


def text_bytes(value: str, *, from_bytes: bool = False) -> int:
    """The UTF-8 size of `value`; TextProblem for a NUL or a surrogate (text_checks.not_text_at).

    ``from_bytes``: the text was decoded with ``errors="surrogateescape"`` (CSV / TSV), so a surrogate stands
    for a byte that is not UTF-8; otherwise (JSON) it is a lone ``\\uD8xx`` escape.
    """
    at = not_text_at(value)
    if at >= 0:
        raise TextProblem(_not_text(value, at, from_bytes))
    return len(value) if value.isascii() else len(value.encode("utf-8"))


def _not_text(value: str, at: int, from_bytes: bool) -> str:
    """Why `value` is not text, its first bad character at `at` (a NUL anywhere in it is named first)."""
    if NUL in value:
        return "holds a NUL character (\\x00), which is not text"
    code = ord(value[at])
    if from_bytes:
        offset = len(value[:at].encode("utf-8"))  # the bytes before it are valid UTF-8
        return f"is not UTF-8 text (byte 0x{code - 0xDC00:02x} at byte {offset})"
    return f"holds a lone UTF-16 surrogate (\\u{code:04x}), which is not text"


def check_cell(value: str, limits: ReadLimits, *, from_bytes: bool = False) -> int:
    """`text_bytes`, and TextProblem past ``max_cell_bytes``."""
    size = text_bytes(value, from_bytes=from_bytes)
    if size > limits.max_cell_bytes:
        raise TextProblem(cell_too_large(size, limits))
    return size


def cell_too_large(size: int | None, limits: ReadLimits) -> str:
    """Why a cell past ``max_cell_bytes`` is refused (its size, when known), for a message about it."""
    known = "" if size is None else f"{size:,} bytes, "
    return f"is {known}more than {size_text(limits.max_cell_bytes)} per cell, the limit ({SETTING['max_cell_bytes']})"


def check_name(name: str, where: str, *, from_bytes: bool = False) -> None:
    """A column name: text, at most MAX_NAME_BYTES; InvalidInput (field ``file``) naming `where`."""
    try:
        size = text_bytes(name, from_bytes=from_bytes)
    except TextProblem as exc:
        raise InvalidInput(f"{where}: the column name {exc}", field="file") from None
    if size > MAX_NAME_BYTES:
        raise InvalidInput(f"{where}: the column name is {size:,} bytes, more than {MAX_NAME_BYTES:,}",
                           field="file")


def check_columns(count: int, limits: ReadLimits, where: str, what: str = "columns") -> None:
    if count > limits.max_columns:
        raise InvalidInput(f"{where}: {count:,} {what}, more than {limits.max_columns:,} columns, the limit "
                           f"({SETTING['max_columns']})", field="file")


def line_too_long(size: int, limits: ReadLimits, where: str) -> InvalidInput:
    return InvalidInput(f"{where}: the line is longer than {size_text(limits.max_line_bytes)}, the limit "
                        f"({SETTING['max_line_bytes']})" if size < 0 else
                        f"{where}: the line is {size:,} bytes, more than {size_text(limits.max_line_bytes)}, the "
                        f"limit ({SETTING['max_line_bytes']})", field="file")
