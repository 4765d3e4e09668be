"""Deterministic tar building and paranoid tar extraction for checkpoint folders.

``build_tar`` writes an uncompressed tar of regular files and folders only, sorted, with normalised
metadata, so the same folder always gives the same bytes (and the same sha256). ``safe_extract`` refuses
anything that could write outside its destination and publishes the result with one rename.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import BinaryIO, Protocol

from service.artifacts.tar_guard import HeaderGuard
from service.core.errors import StorageError, UnsafeArchive

_BUFSIZE = 1024 * 1024
_HAS_FILTERS = hasattr(tarfile, "data_filter")  # Python >= 3.11.4 / 3.12
_FilterError: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative posix name, path, lstat) for everything under ``root``, parents first, names sorted."""
    folder = root / rel if rel else root
    for name in sorted(os.listdir(folder)):
        path = folder / name
        st = path.lstat()
        arcname = f"{rel}/{name}" if rel else name
        yield arcname, path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, arcname)


def _tarinfo(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        info.size = st.st_size
    else:
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "special file"
        raise UnsafeArchive(f"cannot archive {arcname!r}: it is a {kind}; only files and folders are allowed")
    return info


def build_tar(src_dir: str | os.PathLike[str], dest_file: str | os.PathLike[str] | _Writable) -> None:
    """Write ``src_dir``'s contents (names relative to it) as an uncompressed PAX tar to a path or binary writer.

    Refuses (UnsafeArchive) symlinks and special files. A path destination is only written when complete.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise StorageError(f"not a folder: {src}")
    if isinstance(dest_file, (str, os.PathLike)):
        dest = Path(dest_file)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                build_tar(src, f)
            os.replace(tmp, dest)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        return
    try:
        with tarfile.open(fileobj=dest_file, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                          bufsize=_BUFSIZE) as tar:  # fmt: skip
            for arcname, path, st in _walk(src):
                info = _tarinfo(arcname, st)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    except OSError as exc:
        raise StorageError(f"cannot archive {src}: {exc}") from exc


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's checked relative name, None for a root entry (``.`` / ``./``), else UnsafeArchive."""
    name = member.name
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"archive member has an invalid name: {name!r}")
    if name.startswith("/") or posixpath.isabs(name):
        raise UnsafeArchive(f"archive member has an absolute name: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"archive member escapes with '..': {name!r}")
    if not (member.isreg() or member.isdir()) or member.issparse():
        raise UnsafeArchive(f"archive member {name!r} is a link or special file; only files and folders allowed")
    return "/".join(parts) or None


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _extract_all(tar: tarfile.TarFile, tmp: str) -> None:
    root = os.path.realpath(tmp)
    for member in tar:
        name = _member_name(member)
        if name is None:
            continue
        target = os.path.realpath(os.path.join(root, name))
        if not _inside(root, target) or target == root:
            raise UnsafeArchive(f"archive member {member.name!r} resolves outside the destination")
        member.name = name
        if _HAS_FILTERS:
            tar.extract(member, root, set_attrs=True, filter="data")
        else:  # pragma: no cover - old Python without extraction filters
            tar.extract(member, root, set_attrs=False)


def safe_extract(
    src: str | os.PathLike[str] | _Readable | BinaryIO,
    dest_dir: str | os.PathLike[str],
    *,
    before_publish: Callable[[], None] | None = None,
) -> None:
    """Extract an uncompressed tar (path or readable stream, read once, in order) into ``dest_dir``.

    Refuses with UnsafeArchive: absolute names, any ``..`` component, links of any kind, device/fifo/sparse
    members, names resolving outside, and (service.artifacts.tar_guard) oversized or malformed pax / GNU long
    name headers, before tarfile parses them. Extraction goes into a temp folder beside ``dest_dir``;
    ``before_publish`` (e.g. a checksum check) runs after the last member, then one rename publishes it.
    On any failure nothing is left. ``dest_dir`` must not exist or be an empty folder.
    """
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StorageError(f"extraction destination exists and is not an empty folder: {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with ExitStack() as stack:
            fileobj = src
            if isinstance(src, (str, os.PathLike)):
                fileobj = stack.enter_context(open(src, "rb"))
            guarded = HeaderGuard(fileobj)  # headers bounded and checked before tarfile parses them
            tar = stack.enter_context(tarfile.open(fileobj=guarded, mode="r|", bufsize=_BUFSIZE))
            _extract_all(tar, tmp)
        if before_publish is not None:
            before_publish()
        os.chmod(tmp, 0o755)  # mkdtemp made it 0700
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.rename(tmp, dest)
    except _FilterError as exc:  # type: ignore[misc]
        _remove(tmp)
        raise UnsafeArchive(f"unsafe archive member: {exc}") from exc
    except (tarfile.TarError, OSError) as exc:
        _remove(tmp)
        raise StorageError(f"cannot extract archive into {dest}: {exc}") from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
