"""The artifact store interface, plus the key rules and checksum helpers every backend shares.

Keys are store-relative POSIX keys that stsweep generates (``studies/<id>/trials/3/final.tar``), never a
client-supplied path. Every public method validates its key first.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.artifacts.archive import safe_extract
from service.core.errors import InvalidInput, PayloadTooLarge, StorageError

CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 900  # leaves room for an S3 prefix under S3's 1024-byte key limit
_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    sha256: str
    size: int


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise InvalidInput(field="key").

    Allowed: ``[A-Za-z0-9._/-]``, non-empty ``/``-separated components, none ``.``/``..`` or starting
    with ``.`` (that namespace is kept for temporary files), no leading or trailing ``/``.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or not _KEY_CHARS.fullmatch(key):
        raise InvalidInput(f"invalid artifact key {key!r}", field="key")
    for part in key.split("/"):
        if not part or part.startswith("."):
            raise InvalidInput(f"invalid artifact key {key!r}", field="key")
    return key


def validate_prefix(prefix: str) -> str:
    """Normalise a folder-like prefix: ``""`` (everything) or a valid key; one trailing ``/`` is allowed."""
    if prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/"):
        prefix = prefix[:-1]
    return validate_key(prefix)


def resolve_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """Turn an HTTP-style range (``end`` inclusive, None = to the end) into ``[start, stop)`` for ``size``.

    ``end`` past the object is clamped. ``(0, None)`` is always valid (whole object, even when empty);
    otherwise ``start`` must lie inside the object, else InvalidInput(field="range").
    """
    check_range(start, end)
    if start == 0 and end is None:
        return 0, size
    if start >= size:
        raise InvalidInput(f"range start {start} is beyond the object's {size} bytes", field="range")
    stop = size if end is None else min(end + 1, size)
    return start, stop


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise InvalidInput(f"invalid byte range {start}-{'' if end is None else end}", field="range")


class HashingWriter:
    """Wraps a binary file open for writing; hashes and counts what passes, optionally up to ``max_bytes``."""

    def __init__(self, raw: BinaryIO, max_bytes: int | None = None) -> None:
        self.raw = raw
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise PayloadTooLarge(f"upload exceeds the limit of {self.max_bytes} bytes")
        self._hash.update(data)
        try:
            self.raw.write(data)
        except OSError as exc:
            raise StorageError(f"cannot write artifact data: {exc}") from exc
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """Wraps a readable binary stream; hashes and counts what is read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.size = 0
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.size += len(data)
        self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def copy_stream(src: BinaryIO, dst: HashingWriter | BinaryIO) -> None:
    while chunk := src.read(CHUNK_SIZE):
        dst.write(chunk)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Report an OSError from the store's own file operations as StorageError."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"artifact store I/O failed for {what}: {exc}") from exc


def verify_checksum(key: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual.lower() != expected.lower():
        raise StorageError(f"artifact {key!r} failed its checksum (expected sha256 {expected}, got {actual})")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore(ABC):
    """Immutable blobs under validated keys. Every write is atomic: a key holds a whole object or nothing."""

    @abstractmethod
    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> ArtifactInfo:
        """Copy a local file to ``key`` (replacing any object there), hashing it on the way."""

    @abstractmethod
    def put_dir(self, key_prefix: str, local_dir: str | os.PathLike[str]) -> ArtifactInfo:
        """Store a folder as ONE uncompressed, deterministic tar object at exactly ``key_prefix``."""

    @abstractmethod
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive, HTTP style; None = to the end). Errors raise before iteration."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; NotFound if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; no error if it is already gone."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Keys of the published objects under the folder ``prefix`` (temporary files and unfinished uploads
        are not objects), sorted."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (not a bare string prefix); returns how many."""

    def list_partial(self, prefix: str) -> list[str]:
        """Store-relative names of unfinished writes under the folder ``prefix`` (what a process killed mid-write
        leaves), sorted. None by default: a store whose unfinished uploads are never visible has none to list."""
        return []

    def delete_partial(self, name: str) -> None:
        """Remove one unfinished write named by ``list_partial``; no error if it is already gone."""

    @abstractmethod
    def _open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A readable stream over the whole object; NotFound if absent, StorageError on I/O failure."""

    def get_to_file(
        self, key: str, dest: str | os.PathLike[str], expected_sha256: str | None = None
    ) -> ArtifactInfo:
        """Download ``key`` to ``dest`` atomically; on a checksum mismatch raise StorageError, ``dest`` untouched."""
        validate_key(key)
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self._open_read(key) as src:
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as f:
                        writer = HashingWriter(f)
                        copy_stream(src, writer)
                        f.flush()
                        os.fsync(f.fileno())
                    verify_checksum(key, writer.hexdigest(), expected_sha256)
                    os.chmod(tmp, 0o644)  # mkstemp made it 0600
                    os.replace(tmp, dest)
                except BaseException:
                    with suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            raise StorageError(f"cannot download artifact {key!r} to {dest}: {exc}") from exc
        return ArtifactInfo(key, writer.hexdigest(), writer.size)

    def get_dir(
        self, key: str, dest_dir: str | os.PathLike[str], expected_sha256: str | None = None
    ) -> ArtifactInfo:
        """Stream the tar at ``key`` into ``dest_dir`` (which must not exist or be empty), verified and safe.

        The checksum is checked before the extracted folder is published, so a bad object leaves nothing.
        """
        validate_key(key)
        with self._open_read(key) as src:
            reader = HashingReader(src)

            def verify() -> None:
                reader.drain()
                verify_checksum(key, reader.hexdigest(), expected_sha256)

            safe_extract(reader, dest_dir, before_publish=verify)
        return ArtifactInfo(key, reader.hexdigest(), reader.size)
