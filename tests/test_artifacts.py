"""One behaviour suite for the artifact store, run against a local folder and against S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from service.artifacts import ArtifactInfo, ArtifactStore, LocalArtifactStore, open_store, parse_s3_url
from service.core.errors import InvalidInput, NotFound, StorageError, UnsafeArchive
from service.settings import Settings

ACCESS_KEY, SECRET_KEY = "testing", "testing"
S3_PREFIX = "some/prefix"  # the S3 backend's store prefix inside its bucket


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: a free one
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class Backend:
    store: ArtifactStore
    raw_listing: Callable[[], list[str]]  # everything physically stored, temp files and uploads included
    corrupt: Callable[[str], None]  # flip one byte of a stored object behind the store's back


def _local_backend(tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    store = open_store(Settings(artifact_root=str(root), home=tmp_path))
    assert isinstance(store, LocalArtifactStore) and root.is_dir()

    def corrupt(key: str) -> None:
        path = root / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    return Backend(store, lambda: sorted(p.relative_to(root).as_posix() for p in root.rglob("*")), corrupt)


def _s3_backend(tmp_path: Path, endpoint: str) -> Backend:
    bucket = f"b-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1")  # fmt: skip
    client.create_bucket(Bucket=bucket)
    settings = Settings(artifact_root=f"s3://{bucket}/{S3_PREFIX}", home=tmp_path, s3_endpoint_url=endpoint,
                        s3_access_key_id=ACCESS_KEY, s3_secret_access_key=SECRET_KEY)  # fmt: skip
    store = open_store(settings)

    def listing() -> list[str]:
        objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads])

    def corrupt(key: str) -> None:
        full = f"{S3_PREFIX}/{key}"
        data = bytearray(client.get_object(Bucket=bucket, Key=full)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        client.put_object(Bucket=bucket, Key=full, Body=bytes(data))

    return Backend(store, listing, corrupt)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path)
    return _s3_backend(tmp_path, request.getfixturevalue("moto_endpoint"))


@pytest.fixture
def store(backend: Backend) -> ArtifactStore:
    return backend.store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"dim": 384}')
    (root / "sub" / "model.safetensors").write_bytes(os.urandom(20_000))
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def put_bytes(store: ArtifactStore, tmp_path: Path, key: str, data: bytes) -> ArtifactInfo:
    """``put_file`` of ``data``, written first to a fresh local file under ``tmp_path/src`` (outside the store)."""
    src = tmp_path / "src" / uuid.uuid4().hex
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    return store.put_file(key, src)


def stored_objects(backend: Backend) -> list[str]:
    """Store keys of everything physically stored, from the raw listing (local folders left out)."""
    entries = [e.removeprefix(f"{S3_PREFIX}/") for e in backend.raw_listing()]
    return [e for e in entries if not any(other.startswith(f"{e}/") for other in entries)]


# --- round trips --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 70_000, 9 * 1024 * 1024])  # the last one goes multipart on S3
def test_put_file_get_round_trip(store: ArtifactStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    info = store.put_file("studies/s1/trials/3/final.bin", src)
    assert (info.key, info.sha256, info.size) == ("studies/s1/trials/3/final.bin", sha(data), size)
    assert store.exists(info.key) and store.size(info.key) == size

    got = store.get_to_file(info.key, tmp_path / "out" / "copy.bin", expected_sha256=info.sha256)
    assert (tmp_path / "out" / "copy.bin").read_bytes() == data and got == info
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.bin"]  # no temp file left


def test_put_file_overwrite(store: ArtifactStore, tmp_path: Path) -> None:
    info = put_bytes(store, tmp_path, "datasets/d1/train.jsonl", b"a" * 10 + b"b" * 5)
    assert (info.size, info.sha256) == (15, sha(b"a" * 10 + b"b" * 5))
    info2 = put_bytes(store, tmp_path, "datasets/d1/train.jsonl", b"new")
    store.get_to_file(info2.key, tmp_path / "x", expected_sha256=info2.sha256)
    assert (tmp_path / "x").read_bytes() == b"new"


def test_put_dir_get_dir_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "ckpt")
    info = store.put_dir("studies/s1/trials/0/best.tar", src)
    assert store.put_dir("studies/s1/trials/0/again.tar", src).sha256 == info.sha256  # deterministic tar
    assert store.size(info.key) == info.size

    got = store.get_dir(info.key, tmp_path / "restored", expected_sha256=info.sha256)
    assert got.sha256 == info.sha256
    assert tree(tmp_path / "restored") == tree(src)


def test_missing_object_is_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    for call in (
        lambda: store.get_to_file("nope/x.bin", tmp_path / "x"),
        lambda: store.get_dir("nope/x.tar", tmp_path / "d"),
        lambda: store.size("nope/x.bin"),
        lambda: store.open_range("nope/x.bin", 0, 10),  # raised on the call, before iterating
    ):
        with pytest.raises(NotFound):
            call()
    assert not store.exists("nope/x.bin")
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()


# --- integrity ----------------------------------------------------------------------------------------------


def test_corrupted_file_is_detected(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    info = put_bytes(store, tmp_path, "studies/s1/final.bin", os.urandom(4096))
    dest = tmp_path / "work" / "dest.bin"
    with pytest.raises(StorageError):  # wrong expectation
        store.get_to_file(info.key, dest, expected_sha256="0" * 64)
    assert not dest.exists()

    backend.corrupt(info.key)
    dest.write_bytes(b"previous content")
    with pytest.raises(StorageError, match="checksum"):
        store.get_to_file(info.key, dest, expected_sha256=info.sha256)
    assert dest.read_bytes() == b"previous content"  # untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest.bin"]


def test_corrupted_dir_is_detected(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    info = store.put_dir("studies/s1/best.tar", make_tree(tmp_path / "ckpt"))
    backend.corrupt(info.key)
    with pytest.raises(StorageError):
        store.get_dir(info.key, tmp_path / "work" / "restored", expected_sha256=info.sha256)
    assert list((tmp_path / "work").iterdir()) == []  # neither the folder nor a temp one


# --- failed uploads -----------------------------------------------------------------------------------------


def test_failing_source_leaves_nothing(backend: Backend, tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # written out (past the tar buffer) first ...
    (src / "z-link").symlink_to("a.bin")  # ... then the archive fails part-way through

    with pytest.raises(UnsafeArchive):
        backend.store.put_dir("studies/s/best.tar", src)
    with pytest.raises(StorageError):  # the source vanished: fails while the object is being written
        backend.store.put_file("studies/s/final.bin", tmp_path / "missing.bin")
    assert backend.raw_listing() == []


# --- ranges -------------------------------------------------------------------------------------------------


def test_ranges(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3000)
    key = put_bytes(store, tmp_path, "studies/s/export.bin", data).key

    def read(start: int, end: int | None) -> bytes:
        return b"".join(store.open_range(key, start, end))

    assert read(0, 999) + read(1000, 1999) + read(2000, None) == data
    assert read(0, None) == data
    assert read(0, 0) == data[:1] and read(2999, 2999) == data[-1:] and read(1500, 1500) == data[1500:1501]
    assert read(2990, 10_000) == data[2990:]  # end past the object is clamped
    for start, end in [(3000, None), (5000, 6000), (-1, 5), (10, 5)]:
        with pytest.raises(InvalidInput):
            read(start, end)

    empty = put_bytes(store, tmp_path, "studies/s/empty.bin", b"").key
    assert b"".join(store.open_range(empty)) == b""


# --- deletion -----------------------------------------------------------------------------------------------


def test_delete_prefix(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    sizes = {"a/1.bin": 10, "a/2.bin": 20, "a/b/3.bin": 30, "ab/4.bin": 40, "c.bin": 50}
    for key, n in sizes.items():
        put_bytes(store, tmp_path, key, b"z" * n)
    assert stored_objects(backend) == sorted(sizes)
    assert sum(store.size(k) for k in sizes) == 150

    with pytest.raises(StorageError):
        store.delete_prefix("")
    assert stored_objects(backend) == sorted(sizes)
    assert store.delete_prefix("a") == 3  # a folder, so "ab/" is not included
    assert [k for k in sizes if store.exists(k)] == ["ab/4.bin", "c.bin"]
    assert stored_objects(backend) == ["ab/4.bin", "c.bin"]  # nothing else left behind
    assert sum(store.size(k) for k in stored_objects(backend)) == 90 and store.delete_prefix("a") == 0

    store.delete("ab/4.bin")
    store.delete("ab/4.bin")  # idempotent
    assert not store.exists("ab/4.bin") and stored_objects(backend) == ["c.bin"]
    assert store.size("c.bin") == 50
    assert len(backend.raw_listing()) == 1  # local: empty folders pruned too


# --- key validation -----------------------------------------------------------------------------------------

BAD_KEYS = ["../x", "a/../b", "..", "/abs/x", "a//b", "a/", "%2e%2e/x", "a%2fb", "a\\b", "", ".hidden",
            "a/./b", "a b", "ünï", "a\x00b", "a\nb", "~/x", "a:b", "x" * 1000]  # fmt: skip


def test_bad_keys_are_refused(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    (tmp_path / "f").write_bytes(b"data")
    for key in BAD_KEYS:  # one loop, not parametrised: an S3 backend per case costs a client and a bucket
        calls = [
            lambda: store.put_file(key, tmp_path / "f"),
            lambda: store.put_dir(key, tmp_path),
            lambda: store.get_to_file(key, tmp_path / "out"),
            lambda: store.get_dir(key, tmp_path / "outdir"),
            lambda: store.open_range(key, 0, 1),
            lambda: store.size(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ]
        if key not in ("", "a/"):  # "" and "a/" are fine as folder prefixes
            calls += [lambda: store.delete_prefix(key)]
        for i, call in enumerate(calls):
            with pytest.raises(InvalidInput):
                call()
                pytest.fail(f"call #{i} accepted key {key!r}")
    assert backend.raw_listing() == []
    assert not (tmp_path / "out").exists() and not (tmp_path / "outdir").exists()


def test_factory_rejects_unknown_locations(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        open_store(Settings(artifact_root="gs://bucket/x", home=tmp_path))
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(InvalidInput):
        parse_s3_url("s3:///nobucket")
