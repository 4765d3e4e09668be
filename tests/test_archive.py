"""build_tar is deterministic and round-trips; safe_extract refuses every escape and leaves nothing behind."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from service.artifacts.archive import build_tar, safe_extract
from service.core.errors import StorageError, UnsafeArchive


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(os.urandom(5000))
    (root / "sub" / "deeper" / "ünï.txt").write_text("unicode name")
    (root / ("long" * 40 + ".txt")).write_text("long name needs PAX")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_build_tar_is_deterministic(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    build_tar(src, tmp_path / "one.tar")
    for path in src.rglob("*"):  # new mtimes must not change the bytes
        os.utime(path, (1_000_000, 1_000_000))
    buf = io.BytesIO()
    build_tar(src, buf)
    assert buf.getvalue() == (tmp_path / "one.tar").read_bytes()

    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [  # relative, parents first, siblings sorted
        "config.json", "empty", "long" * 40 + ".txt", "run.sh",
        "sub", "sub/deeper", "sub/deeper/ünï.txt", "sub/weights.bin",
    ]  # fmt: skip
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    assert {m.type for m in members} <= {tarfile.REGTYPE, tarfile.DIRTYPE}


def test_build_tar_refuses_links(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchive):
        build_tar(src, tmp_path / "out.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no partial tar, no temp file


def test_round_trip(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    build_tar(src, tmp_path / "a.tar")
    safe_extract(tmp_path / "a.tar", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)
    with open(tmp_path / "a.tar", "rb") as f:  # from a stream, into an existing empty folder
        (tmp_path / "out2").mkdir()
        safe_extract(f, tmp_path / "out2")
    assert tree(tmp_path / "out2") == tree(src)


def test_empty_folder_round_trip(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    build_tar(tmp_path / "src", tmp_path / "a.tar")
    safe_extract(tmp_path / "a.tar", tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


def test_refuses_non_empty_destination(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    build_tar(src, tmp_path / "a.tar")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(StorageError):
        safe_extract(tmp_path / "a.tar", tmp_path / "out")
    assert tree(tmp_path / "out") == {"keep": b"x"}


def test_before_publish_failure_leaves_nothing(tmp_path: Path) -> None:
    build_tar(make_tree(tmp_path / "src"), tmp_path / "a.tar")

    def boom() -> None:
        raise StorageError("checksum mismatch")

    with pytest.raises(StorageError):
        safe_extract(tmp_path / "a.tar", tmp_path / "out", before_publish=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "src"]


def test_garbage_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar" * 100)
    with pytest.raises(StorageError):
        safe_extract(tmp_path / "bad.tar", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]


# --- crafted hostile archives ------------------------------------------------------------------------------

ABS_TARGET = f"/tmp/stsweep-evil-{uuid.uuid4().hex}"


def _file(name: str, data: bytes = b"pwned") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


HOSTILE = {
    "dotdot": [_file("../evil")],
    "dotdot-nested": [_file("ok/../../evil")],
    "dotdot-long-pax": [_file("a" * 120 + "/../../../evil")],
    "absolute": [_file(ABS_TARGET)],
    "symlink-etc-passwd": [_link("passwd", "/etc/passwd", tarfile.SYMTYPE), _file("passwd", b"overwrite")],
    "symlink-dir-escape": [_link("d", "..", tarfile.SYMTYPE), _file("d/evil")],
    "symlink-inside": [_link("alias", "good.txt", tarfile.SYMTYPE)],
    "hardlink-outside": [_link("hl", "../../outside.txt", tarfile.LNKTYPE)],
    "hardlink-etc-passwd": [_link("hl", "/etc/passwd", tarfile.LNKTYPE)],
    "fifo": [_special("fifo", tarfile.FIFOTYPE)],
    "chardev": [_special("null", tarfile.CHRTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused(tmp_path: Path, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside.txt").write_text("original")
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*_file("good.txt", b"fine"))  # a harmless member first: it must not survive either
        for info, data in HOSTILE[case]:
            tar.addfile(info, data)

    dest = work / "dest"
    with pytest.raises(UnsafeArchive):
        safe_extract(archive, dest)

    assert list(work.iterdir()) == []  # no dest, no temp folder beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar", "outside.txt", "work"]
    assert (tmp_path / "outside.txt").read_text() == "original"
    assert not os.path.lexists(ABS_TARGET)


def test_hostile_stream_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(*_file("../evil"))
    buf.seek(0)
    with pytest.raises(UnsafeArchive):
        safe_extract(buf, tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []
