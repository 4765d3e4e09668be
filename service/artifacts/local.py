"""Artifact store on a local (or mounted) folder: temp file beside the target, fsync, rename, fsync folder."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from service.artifacts.archive import build_tar
from service.artifacts.store import (
    CHUNK_SIZE,
    ArtifactInfo,
    ArtifactStore,
    HashingWriter,
    copy_stream,
    fsync_dir,
    resolve_range,
    storage_errors,
    validate_key,
    validate_prefix,
)
from service.core.errors import InvalidInput, NotFound, StorageError

_TMP_PREFIX = ".tmp-"  # keys never have a component starting with "." (see validate_key)
_PARTIAL = re.compile(r"\.tmp-[A-Za-z0-9_]+\.part")  # what _mkstemp names a write in progress


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        try:
            self.root = Path(root).expanduser().resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create artifact folder {root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        if not path.resolve().is_relative_to(self.root):  # a symlink planted inside the root
            raise StorageError(f"artifact key {key!r} resolves outside the store")
        return path

    def _folder(self, prefix: str) -> Path:
        prefix = validate_prefix(prefix)
        return self._path(prefix) if prefix else self.root

    def _makedirs(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents, fsyncing each new entry's parent for durability."""
        missing: list[Path] = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            with suppress(FileExistsError):
                path.mkdir()
            fsync_dir(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove now-empty folders from ``folder`` up to (not including) the root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _atomic_write(self, key: str, fill: Callable[[HashingWriter], None]) -> ArtifactInfo:
        path = self._path(key)
        with storage_errors(repr(key)):
            fd, tmp = self._mkstemp(path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = HashingWriter(f)
                fill(writer)  # errors from the caller's source propagate unchanged
                with storage_errors(repr(key)):
                    f.flush()
                    os.fsync(f.fileno())
            with storage_errors(repr(key)):
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
                fsync_dir(path.parent)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            self._prune(path.parent)
            raise
        return ArtifactInfo(key, writer.hexdigest(), writer.size)

    def _mkstemp(self, folder: Path) -> tuple[int, str]:
        for attempt in range(3):  # a concurrent prune may remove the folder between mkdir and mkstemp
            self._makedirs(folder)
            try:
                return tempfile.mkstemp(dir=folder, prefix=_TMP_PREFIX, suffix=".part")
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> ArtifactInfo:
        def fill(writer: HashingWriter) -> None:
            with storage_errors(str(local_path)), open(local_path, "rb") as src:
                copy_stream(src, writer)

        return self._atomic_write(key, fill)

    def put_dir(self, key_prefix: str, local_dir: str | os.PathLike[str]) -> ArtifactInfo:
        return self._atomic_write(key_prefix, lambda writer: build_tar(local_dir, writer))

    @contextmanager
    def _open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no artifact {key!r}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read artifact {key!r}: {exc}") from exc
        with f:
            yield f

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self._open_read(key) as f:
            lo, hi = resolve_range(start, end, os.fstat(f.fileno()).st_size)
            span = os.fdopen(os.dup(f.fileno()), "rb")  # outlives this block; the generator closes it
        return _read_span(span, lo, hi, key)

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if path.is_file():
                return path.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot stat artifact {key!r}: {exc}") from exc
        raise NotFound(f"no artifact {key!r}")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete artifact {key!r}: {exc}") from exc
        self._prune(path.parent)

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        with storage_errors(f"listing {prefix!r}"):
            return sorted(path.relative_to(self.root).as_posix() for path in self._files(folder))

    def delete_prefix(self, prefix: str) -> int:
        if not validate_prefix(prefix):
            raise StorageError("refusing to delete the whole artifact store")
        folder = self._folder(prefix)
        if not folder.is_dir():
            return 0
        count = sum(1 for _ in self._files(folder))
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete artifacts under {prefix!r}: {exc}") from exc
        self._prune(folder.parent)
        return count

    def list_partial(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        with storage_errors(f"listing {prefix!r}"):
            if not folder.is_dir():
                return []
            return sorted((Path(dirpath) / name).relative_to(self.root).as_posix()
                          for dirpath, _dirnames, filenames in os.walk(folder)
                          for name in filenames if _PARTIAL.fullmatch(name))

    def delete_partial(self, name: str) -> None:
        parent, _, base = name.rpartition("/")
        if not _PARTIAL.fullmatch(base):
            raise InvalidInput(f"not an unfinished write: {name!r}", field="key")
        path = self._folder(parent) / base
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete unfinished write {name!r}: {exc}") from exc
        self._prune(path.parent)

    def _files(self, folder: Path) -> Iterator[Path]:
        """Published objects under ``folder`` (temp files skipped)."""
        if not folder.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                if not name.startswith("."):
                    yield Path(dirpath) / name


def _read_span(f: BinaryIO, start: int, stop: int, key: str) -> Iterator[bytes]:
    try:
        f.seek(start)
        remaining = stop - start
        while remaining > 0:
            chunk = f.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise StorageError(f"artifact {key!r} shrank while being read")
            remaining -= len(chunk)
            yield chunk
    except OSError as exc:
        raise StorageError(f"cannot read artifact {key!r}: {exc}") from exc
    finally:
        f.close()

