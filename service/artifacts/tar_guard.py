"""A read-through guard that checks a tar stream's headers before `tarfile` parses them.

`tarfile` reads a pax extended header (or a GNU long name / long link) whole, and on interpreters before 3.11.10 /
3.12.6 parses it in time quadratic in its size (CVE-2024-6232: a 512 KiB header costs minutes). ``HeaderGuard``
wraps the raw reader that `tarfile` pulls bytes from and follows the archive's structure itself, one 512-byte
header block at a time, in linear time:

- an extended header (pax ``x`` / ``X`` / ``g``, GNU ``L`` / ``K``) larger than ``max_extended_bytes`` is refused
  from its header block, before its data is read;
- a pax header's records must be well formed (``"<len> <key>=<value>\\n"``, each length covering its record
  exactly) and hold no run of more than 32 digits, so `tarfile`'s own regular expressions stay linear on every
  interpreter; sparse-file keys and a global ``size`` are refused;
- at most one extended header ('x' or 'L'/'K') precedes a member;
- only regular files and folders are allowed: links, devices, fifos, sparse and unknown member types are refused
  as soon as their header is seen (`safe_extract` refuses them too, later; this keeps the offsets it follows
  exactly those `tarfile` uses: a pax ``size`` record overrides a regular member's size, a folder has no data).

Everything it refuses raises UnsafeArchive. A header block `tarfile` would reject (bad checksum) or the end-of-
archive block ends the checking: `tarfile` stops (or fails) there itself.
"""

from __future__ import annotations

import re
import tarfile
from typing import Protocol

from service.core.errors import UnsafeArchive

BLOCK = tarfile.BLOCKSIZE
DEFAULT_MAX_EXTENDED_BYTES = 64 * 1024
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_GNU_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_LONG_DIGITS = re.compile(rb"\d{33}")
_MAX_LENGTH_DIGITS = 20


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _type_name(kind: bytes) -> str:
    return {tarfile.XHDTYPE: "pax extended header", tarfile.SOLARIS_XHDTYPE: "pax extended header",
            tarfile.XGLTYPE: "pax global header", tarfile.GNUTYPE_LONGNAME: "GNU long name header",
            tarfile.GNUTYPE_LONGLINK: "GNU long link header"}.get(kind, f"member of type {kind!r}")


def parse_pax_records(data: bytes) -> dict[bytes, bytes]:
    """The records of a pax header's data (its first ``size`` bytes), checked strictly in linear time; a
    malformed record raises UnsafeArchive."""
    if _LONG_DIGITS.search(data):
        raise UnsafeArchive("archive has a pax header with a run of more than 32 digits")
    records: dict[bytes, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + _MAX_LENGTH_DIGITS + 1))
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise UnsafeArchive(f"archive has a malformed pax header record at byte {pos}")
        length = int(digits)
        stop = pos + length
        equals = data.find(b"=", space + 1, stop)
        if stop > end or equals <= space + 1 or data[stop - 1:stop] != b"\n":
            raise UnsafeArchive(f"archive has a malformed pax header record at byte {pos}")
        records[data[space + 1:equals]] = data[equals + 1:stop - 1]
        pos = stop
    return records


class HeaderGuard:
    """Wraps the reader `tarfile.open(fileobj=..., mode="r|")` reads from; see the module's docstring."""

    def __init__(self, raw: _Readable, max_extended_bytes: int = DEFAULT_MAX_EXTENDED_BYTES) -> None:
        self._raw = raw
        self._max = max_extended_bytes
        self._pos = 0  # stream offset of the next byte to inspect
        self._next_header = 0
        self._header = bytearray()
        self._ext_kind: bytes | None = None  # an extended header whose data is being collected
        self._ext_data = bytearray()
        self._ext_size = 0
        self._ext_end = 0
        self._extended = False  # an 'x' / 'L' / 'K' header is waiting for its member
        self._pax_size: int | None = None  # the waiting pax header's size record
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        if data and not self._done:
            self._inspect(memoryview(data))
        return data

    # ---------------------------------------------------------------- the structure, byte by byte

    def _inspect(self, data: memoryview) -> None:
        i = 0
        while i < len(data) and not self._done:
            at = self._pos + i
            if self._ext_kind is not None and at < self._ext_end:
                take = min(len(data) - i, self._ext_end - at)
                room = self._ext_size - len(self._ext_data)
                if room > 0:
                    self._ext_data += data[i:i + min(take, room)]
                i += take
                if self._pos + i == self._ext_end:
                    self._extended_done()
            elif at < self._next_header:
                i += min(len(data) - i, self._next_header - at)
            else:
                take = min(len(data) - i, BLOCK - len(self._header))
                self._header += data[i:i + take]
                i += take
                if len(self._header) == BLOCK:
                    self._header_done(self._pos + i)
        self._pos += len(data)

    def _header_done(self, data_start: int) -> None:
        block = bytes(self._header)
        self._header.clear()
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:  # end of archive (zeros) or a block tarfile rejects itself: it stops here
            self._done = True
            return
        kind = info.type
        if kind in _PAX_TYPES or kind in _GNU_LONG or kind == tarfile.XGLTYPE:
            if info.size > self._max:
                raise UnsafeArchive(f"archive has a {_type_name(kind)} of {info.size:,} bytes; at most "
                                    f"{self._max:,} are allowed")
            if kind != tarfile.XGLTYPE:
                if self._extended:
                    raise UnsafeArchive("archive has a member with more than one extended header")
                self._extended = True
            self._ext_kind, self._ext_size = kind, info.size
            self._ext_end = data_start + _blocks(info.size)
            self._ext_data.clear()
            if info.size == 0:
                self._extended_done()
            return
        if kind in _FILE_TYPES:  # (an old-style folder, a file name ending in "/", came back as DIRTYPE)
            size = self._pax_size if self._pax_size is not None else info.size
            self._next_header = data_start + _blocks(size)
        elif kind == tarfile.DIRTYPE:
            self._next_header = data_start
        else:
            raise UnsafeArchive(f"archive member {info.name!r} is a link or special file (type {kind!r}); only "
                                "files and folders allowed")
        self._extended, self._pax_size = False, None

    def _extended_done(self) -> None:
        kind, data = self._ext_kind, bytes(self._ext_data)
        self._ext_kind = None
        self._ext_data.clear()
        self._next_header = self._ext_end
        if kind in _GNU_LONG:
            return
        records = parse_pax_records(data)
        if any(key.startswith(b"GNU.sparse.") for key in records):
            raise UnsafeArchive("archive has a sparse member; only files and folders allowed")
        if b"size" not in records:
            return
        if kind == tarfile.XGLTYPE:
            raise UnsafeArchive("archive has a pax global header with a size record")
        try:
            size = int(records[b"size"])
        except ValueError:
            size = 0  # what tarfile makes of it
        if size < 0:
            raise UnsafeArchive("archive has a pax header with a negative size")
        self._pax_size = size
