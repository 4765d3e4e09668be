"""Uploaded data sets: content-addressed objects in the artifact store, checked on upload, found by id only.

An upload is first spooled to a local temp file (size limit enforced chunk by chunk, sha256 computed on the
way), parsed and checked with service/core/tabular for the declared task, with the settings' read limits (rows,
decoded bytes, columns, cell and line bytes, JSON nesting: core/limits.py), and only then published to the store at
``datasets/<project>/<sha256>.<format>`` (the `default` project: ``datasets/<sha256>.<format>``, as before
projects). So a refused upload (too large, malformed, a bad row) never leaves anything in the store, and the same
bytes in one project always give the same id and one object. De-duplication is per project: another project's
upload of the same bytes gets its own id and its own object, so nothing tells one project what another holds.
Publishing and deleting one (project, sha256) are serialised by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts.store import HashingWriter
from service.context import Context
from service.core.access import DEFAULT_PROJECT
from service.store import quotas
from service.store.db import session_scope
from service.core.score_range import parse_score_range
from service.core.errors import Conflict, InvalidInput, NotFound
from service.core.limits import TextProblem, text_bytes
from service.core.text_checks import json_too_deep
from service.core.schemas import ColumnInfo, DatasetPublic, Page
from service.core.tabular import Column, check_rows, column_map, detect_format, read_table
from service.core.tasks import TASKS

DATASET_ID = re.compile(r"^ds_[0-9a-f]{16}$")
DEFAULT_SCORE_RANGE = (0.0, 1.0)  # the same default as a study's data.score_range
MAX_FILENAME = 255
_PREVIEW_TEXT = 500  # characters of a text value kept in a preview


@dataclass(frozen=True)
class UploadOptions:
    task: str
    columns: dict[str, Column] | None = None  # role -> column name, or 0-based position when header is False
    score_range: tuple[float, float] = DEFAULT_SCORE_RANGE
    format: str | None = None
    header: bool = True  # False: a CSV / TSV without a header row, columns by position


def dataset_id_for(sha256: str, project: str = DEFAULT_PROJECT) -> str:
    """``ds_`` + 16 hex digits: of the content's sha256 in the `default` project (as before projects), else of a
    hash of the project and the content (ids of one file in two projects are unrelated)."""
    if project == DEFAULT_PROJECT:
        return "ds_" + sha256[:16]
    return "ds_" + hashlib.sha256(f"{project}\0{sha256}".encode()).hexdigest()[:16]


def validate_id(dataset_id: str) -> str:
    """Ids are opaque; anything else (``..``, paths, encodings) is simply not found, and nothing is read."""
    if not DATASET_ID.fullmatch(dataset_id):
        raise NotFound(f"dataset {dataset_id!r} not found", field="dataset_id")
    return dataset_id


def storage_key(sha256: str, fmt: str, project: str = DEFAULT_PROJECT) -> str:
    if project == DEFAULT_PROJECT:
        return f"datasets/{sha256}.{fmt}"
    return f"datasets/{project}/{sha256}.{fmt}"


# ---------------------------------------------------------------- upload options


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_options(task: str | None, columns: str | None, score_range: str | None,
                  fmt: str | None = None, header: str | None = None) -> UploadOptions:
    """Upload form fields (strings) -> UploadOptions; InvalidInput naming the field otherwise.

    ``header`` is "true" (the default) or "false"; without a header, ``columns`` gives every role's 0-based
    position ({"sentence1": 5, "sentence2": 6, "score": 4}), with one the column names.
    """
    if not task:
        raise InvalidInput(f"task is required (one of {', '.join(TASKS)})", field="task")
    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r} (choose from {', '.join(TASKS)})", field="task")
    has_header = True
    if header:
        if header.strip().lower() not in _TRUE + _FALSE:
            raise InvalidInput(f"expected true or false, got {header!r}", field="header")
        has_header = header.strip().lower() in _TRUE
    mapping: dict[str, Column] | None = None
    if columns:
        example = '{"sentence1": 5, "score": 4}' if not has_header else '{"score": "label"}'
        if json_too_deep(columns, 1):  # before json.loads, whose parser recurses
            raise InvalidInput(f"expected a flat JSON object mapping role to column, e.g. {example}", field="columns")
        try:
            mapping = json.loads(columns)
        except ValueError as exc:  # JSONDecodeError, or a number Python will not convert
            raise InvalidInput(f"not JSON: {getattr(exc, 'msg', exc)}", field="columns") from exc
        if not isinstance(mapping, dict):
            raise InvalidInput(f"expected a JSON object mapping role to column, e.g. {example}", field="columns")
        _check_texts(mapping)
    if mapping or not has_header:
        column_map(task, mapping, header=has_header, field="columns")  # the same check as when reading
    low_high = DEFAULT_SCORE_RANGE
    if score_range:
        if json_too_deep(score_range, 1):
            raise InvalidInput("expected 'low,high' or [low, high]", field="score_range")
        low_high = parse_score_range(score_range)
    if fmt:
        fmt = detect_format(Path("upload"), fmt)
    return UploadOptions(task=task, columns=mapping or None, score_range=low_high, format=fmt or None,
                         header=has_header)


def _check_texts(mapping: dict[str, Any]) -> None:
    """Roles and column names are text: no NUL, no lone surrogate (a JSON escape can carry either)."""
    for role, column in mapping.items():
        for value in (role, column):
            if isinstance(value, str):
                try:
                    text_bytes(value)
                except TextProblem as exc:
                    raise InvalidInput(f"{value!r} {exc}", field="columns") from None


def clean_filename(name: str | None) -> str:
    """The client's file name is kept for display and to tell the format, never used as a path."""
    base = PurePath((name or "").replace("\\", "/")).name
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[-MAX_FILENAME:] or "upload"


# ---------------------------------------------------------------- spooling


class Spool:
    """A local temp file an upload streams into: counted against ``max_bytes`` (PayloadTooLarge) and hashed.

    Use as a context manager; the temp folder is removed on exit whatever happened.
    """

    def __init__(self, max_bytes: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="stsweep-upload-")
        self.path = Path(self._dir) / "data"
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in finish()/close()
        self._writer = HashingWriter(self._file, max_bytes)

    def write(self, data: bytes) -> None:
        if data:
            self._writer.write(data)

    def finish(self) -> None:
        self._file.close()

    @property
    def size(self) -> int:
        return self._writer.size

    @property
    def sha256(self) -> str:
        return self._writer.hexdigest()

    def close(self) -> None:
        self._file.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- ingest


def ingest(ctx: Context, spool: Spool, filename: str, opts: UploadOptions,
           project: str = DEFAULT_PROJECT) -> tuple[DatasetPublic, bool]:
    """Check the spooled upload for ``opts.task`` and publish it in `project`. Returns (dataset, created).

    Same bytes already stored in the project: the row is returned as is (created False), after the bytes were checked for this
    upload's task too; a different declared format for the same bytes is a Conflict. New bytes that would pass the
    project's `max_stored_bytes` are a PayloadTooLarge naming it, and nothing is stored.
    """
    spool.finish()
    if spool.size == 0:
        raise InvalidInput("the file is empty", field="file")
    fmt = detect_format(Path(filename), opts.format)
    try:
        table = read_table(spool.path, fmt, header=opts.header, columns=opts.columns,
                           limits=ctx.settings.read_limits())
        report = check_rows(table, opts.task, opts.columns, opts.score_range, field="file")
    except InvalidInput as exc:
        where = exc.field or ""
        if where == "data.columns" or where.startswith("data.columns."):  # the upload's field is `columns`
            raise InvalidInput(exc.message, field=where.removeprefix("data.")) from exc
        raise
    columns = [{"name": f.name, "type": str(f.type), "role": report.roles.get(f.name)} for f in table.schema]
    sha = spool.sha256
    dataset_id = dataset_id_for(sha, project)
    key = storage_key(sha, fmt, project)
    with session_scope(ctx.sessions) as s:
        _lock(s, project, sha)
        existing = s.execute(text("SELECT format FROM datasets WHERE project = :p AND sha256 = :sha"),
                             {"sha": sha, "p": project}).first()
        if existing is not None:
            if existing.format != fmt:
                raise Conflict(f"these bytes are already dataset {dataset_id}, stored as {existing.format}, "
                               f"not {fmt}", field="format")
            created = False
        else:
            # The byte quota: checked before publishing (sparing an upload bound to be refused), and again with
            # the project row locked right before the row is stored. The lock is not held during the upload,
            # which may take long: an upload that loses a race for the last bytes is deleted again.
            what = f"a data set of {spool.size} bytes"
            quotas.check_bytes(s, quotas.hold(s, project, quotas.BYTES, lock=False), spool.size, what)
            ctx.artifacts.put_file(key, spool.path)
            try:
                quotas.check_bytes(s, quotas.hold(s, project, quotas.BYTES), spool.size, what)
                s.execute(text("""
                    INSERT INTO datasets (id, sha256, filename, format, size_bytes, storage_key, row_count, columns,
                                          duplicate_rows, preview, project)
                    VALUES (:id, :sha, :filename, :fmt, :size, :key, :rows, CAST(:columns AS jsonb), :dups,
                            CAST(:preview AS jsonb), :project)"""),
                    {"id": dataset_id, "sha": sha, "project": project, "filename": filename, "fmt": fmt, "size": spool.size,
                     "key": key, "rows": report.row_count, "columns": json.dumps(columns),
                     "dups": report.duplicate_rows, "preview": json.dumps(_json_safe(report.preview))})
                s.flush()
            except BaseException:
                ctx.artifacts.delete(key)
                raise
            created = True
    return get_dataset(ctx.sessions, dataset_id, with_users=False), created


def _lock(s: Session, project: str, sha256: str) -> None:
    """Serialise publish / delete of one content hash in one project (until the transaction ends)."""
    s.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
              {"k": f"stsweep-dataset:{project}:{sha256}"})


def _json_safe(value: Any) -> Any:
    """Preview values as JSON (and JSONB) can hold them: no NaN, no bytes or dates, long texts cut."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    text_ = value if isinstance(value, str) else str(value)
    return text_ if len(text_) <= _PREVIEW_TEXT else text_[:_PREVIEW_TEXT] + "…"


# ---------------------------------------------------------------- reading


_COLUMNS = "id, project, sha256, filename, format, size_bytes, row_count, columns, duplicate_rows, preview, created_at"


def _public(row: Any, *, preview: bool, used_by: list[str] | None = None) -> DatasetPublic:
    return DatasetPublic(id=row.id, project=row.project, sha256=row.sha256, filename=row.filename, format=row.format,
                         size_bytes=row.size_bytes, row_count=row.row_count,
                         columns=[ColumnInfo(**c) for c in row.columns], duplicate_rows=row.duplicate_rows,
                         preview=row.preview if preview else None, created_at=row.created_at, used_by=used_by)


def get_dataset(factory: sessionmaker[Session], dataset_id: str, *, with_users: bool = True) -> DatasetPublic:
    validate_id(dataset_id)
    with session_scope(factory) as s:
        row = s.execute(text(f"SELECT {_COLUMNS} FROM datasets WHERE id = :id"), {"id": dataset_id}).first()
        if row is None:
            raise NotFound(f"dataset {dataset_id} not found", field="dataset_id")
        users = None
        if with_users:
            users = list(s.execute(text("SELECT DISTINCT study_id FROM study_datasets WHERE dataset_id = :id "
                                        "ORDER BY study_id"), {"id": dataset_id}).scalars())
    return _public(row, preview=True, used_by=users)


def project_of(factory: sessionmaker[Session], dataset_id: str) -> str | None:
    """The data set's project (None: no such data set)."""
    with session_scope(factory) as s:
        found = s.execute(text("SELECT project FROM datasets WHERE id = :id"), {"id": dataset_id}).scalar_one_or_none()
    return None if found is None else str(found)


def list_datasets(factory: sessionmaker[Session], offset: int, limit: int,
                  project: str | None = None) -> Page[DatasetPublic]:
    """Data sets newest first, of one `project` (None: every project)."""
    where = "WHERE project = :p" if project is not None else ""
    params = {"limit": limit, "offset": offset, "p": project}
    with session_scope(factory) as s:
        total = s.execute(text(f"SELECT count(*) FROM datasets {where}"), params).scalar_one()
        rows = s.execute(text(f"SELECT {_COLUMNS} FROM datasets {where} ORDER BY created_at DESC, id "
                              "LIMIT :limit OFFSET :offset"), params).all()
    return Page[DatasetPublic](items=[_public(r, preview=False) for r in rows], total=total, offset=offset,
                               limit=limit)


# ---------------------------------------------------------------- deleting


def delete_dataset(ctx: Context, dataset_id: str) -> None:
    """Delete the row and its object; Conflict while any study references it."""
    validate_id(dataset_id)
    try:
        with session_scope(ctx.sessions) as s:
            row = s.execute(text("SELECT project, sha256, storage_key FROM datasets WHERE id = :id"),
                            {"id": dataset_id}).first()
            if row is None:
                raise NotFound(f"dataset {dataset_id} not found", field="dataset_id")
            _lock(s, row.project, row.sha256)
            users = list(s.execute(text("SELECT DISTINCT study_id FROM study_datasets WHERE dataset_id = :id "
                                        "ORDER BY study_id"), {"id": dataset_id}).scalars())
            if users:
                raise Conflict(f"dataset {dataset_id} is used by {len(users)} "
                               f"stud{'y' if len(users) == 1 else 'ies'} ({', '.join(users[:5])}); "
                               "delete those first", field="dataset_id")
            # The foreign key (ON DELETE RESTRICT) catches a study created since the check.
            s.execute(text("DELETE FROM datasets WHERE id = :id"), {"id": dataset_id})
            s.flush()
            ctx.artifacts.delete(row.storage_key)  # a store failure rolls the row back
    except IntegrityError as exc:
        raise Conflict(f"dataset {dataset_id} is used by a study; delete it first", field="dataset_id") from exc


@dataclass(frozen=True)
class DatasetFile:
    storage_key: str
    sha256: str
    format: str


def dataset_file(factory: sessionmaker[Session], dataset_id: str) -> DatasetFile | None:
    """Where an uploaded data set's bytes are kept (for a worker to fetch), or None once it is deleted."""
    with session_scope(factory) as s:
        row = s.execute(text("SELECT storage_key, sha256, format FROM datasets WHERE id = :id"),
                        {"id": dataset_id}).first()
    return DatasetFile(row.storage_key, row.sha256, row.format) if row else None
