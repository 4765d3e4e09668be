"""Artifact store on S3 (or an S3-compatible server): objects appear whole when their upload completes.

Uploads go through boto3's managed transfer (multipart above its threshold). Folders are first
spooled to a local temp file, so a refused or failed upload never leaves an object behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from service.artifacts.archive import build_tar
from service.artifacts.store import (
    CHUNK_SIZE,
    ArtifactInfo,
    ArtifactStore,
    HashingWriter,
    check_range,
    storage_errors,
    validate_key,
    validate_prefix,
)
from service.core.errors import InvalidInput, NotFound, StorageError

_MISSING = {"404", "NoSuchKey", "NotFound"}
SHA256_METADATA = "sha256"


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Map boto errors to domain errors: a missing object is NotFound, anything else StorageError."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise NotFound(f"no artifact {what}") from exc
        if code == "InvalidRange":
            raise InvalidInput(f"byte range not satisfiable for {what}", field="range") from exc
        raise StorageError(f"S3 error on {what}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 unavailable for {what}: {exc}") from exc
    except Boto3Error as exc:  # S3UploadFailedError: boto3's wrapper of a ClientError during a managed upload
        raise StorageError(f"S3 upload failed for {what}: {exc}") from exc


class _Body:
    """A get_object body whose read errors surface as StorageError."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def read(self, n: int = -1) -> bytes:
        with _s3_errors(self._what):
            return self._body.read(None if n is None or n < 0 else n)

    def close(self) -> None:
        self._body.close()


class S3ArtifactStore(ArtifactStore):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = validate_prefix(prefix.strip("/")) if prefix.strip("/") else ""

    def __repr__(self) -> str:
        return f"S3ArtifactStore('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, prefix: str) -> str:
        prefix = validate_prefix(prefix)
        full = "/".join(p for p in (self.prefix, prefix) if p)
        return f"{full}/" if full else ""

    def _what(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> ArtifactInfo:
        self._key(key)  # validate before reading anything
        digest, size = hashlib.sha256(), 0
        try:
            with open(local_path, "rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read {local_path}: {exc}") from exc
        return self._upload(key, local_path, ArtifactInfo(key, digest.hexdigest(), size))

    def _upload(self, key: str, local_path: str | os.PathLike[str], info: ArtifactInfo) -> ArtifactInfo:
        """Managed (multipart when big) upload; the object only becomes visible once complete."""
        extra = {"Metadata": {SHA256_METADATA: info.sha256}}
        with _s3_errors(self._what(key)):
            self.client.upload_file(os.fspath(local_path), self.bucket, self._key(key), ExtraArgs=extra)
        return info

    def _spool_and_put(self, key: str, fill: Callable[[HashingWriter], None]) -> ArtifactInfo:
        self._key(key)  # validate before doing any work
        with tempfile.TemporaryDirectory(prefix="stsweep-s3-") as tmpdir:
            path = os.path.join(tmpdir, "upload")
            with storage_errors(f"spool file of {key!r}"):
                f = open(path, "wb")
            with f:
                writer = HashingWriter(f)
                fill(writer)  # errors from the caller's source propagate unchanged
            return self._upload(key, path, ArtifactInfo(key, writer.hexdigest(), writer.size))

    def put_dir(self, key_prefix: str, local_dir: str | os.PathLike[str]) -> ArtifactInfo:
        return self._spool_and_put(key_prefix, lambda writer: build_tar(local_dir, writer))

    @contextmanager
    def _open_read(self, key: str) -> Iterator[BinaryIO]:
        what = self._what(key)
        with _s3_errors(what):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        body = _Body(response["Body"], what)
        try:
            yield body  # type: ignore[misc]
        finally:
            body.close()

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_range(start, end)
        what = self._what(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if not (start == 0 and end is None):
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        with _s3_errors(what):
            response = self.client.get_object(**kwargs)
        return _iter_body(_Body(response["Body"], what))

    def size(self, key: str) -> int:
        with _s3_errors(self._what(key)):
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        with _s3_errors(self._what(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        folder = self._folder(prefix)
        with _s3_errors(f"s3://{self.bucket}/{folder}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                yield from page.get("Contents", [])

    def list_keys(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(obj["Key"][strip:] for obj in self._list(prefix))

    def delete_prefix(self, prefix: str) -> int:
        if not validate_prefix(prefix):
            raise StorageError("refusing to delete the whole artifact store")
        count = 0
        batch: list[dict[str, str]] = []
        for obj in self._list(prefix):
            batch.append({"Key": obj["Key"]})
            if len(batch) == 1000:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, batch: list[dict[str, str]]) -> int:
        with _s3_errors(f"s3://{self.bucket} (batch delete)"):
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        if errors := response.get("Errors"):
            first = errors[0]
            raise StorageError(f"S3 refused to delete {len(errors)} objects, e.g. {first.get('Key')}: "
                               f"{first.get('Code')} {first.get('Message')}")  # fmt: skip
        return len(batch)


def _iter_body(body: _Body) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK_SIZE):
            yield chunk
    finally:
        body.close()
