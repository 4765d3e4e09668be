"""/v1/datasets: upload (streamed, size-limited), list, read, delete.

Two ways to upload, both streamed chunk by chunk into a local spool file (never buffered whole in memory), with
the size limit (``max_upload_bytes``) counted on the file's bytes as they arrive:

- ``multipart/form-data`` with a part ``file`` (its file name tells the format) and the text fields ``task``,
  ``columns`` (JSON role -> column), ``score_range`` ("low,high" or [low, high]), ``format`` (optional) and
  ``header`` ("true", the default, or "false": a CSV / TSV without a header row, whose ``columns`` then give
  0-based positions, e.g. the STS benchmark's ``{"sentence1": 5, "sentence2": 6, "score": 4}``).
  The body is parsed by python-multipart's streaming parser directly from ``request.stream()``.
- any other content type (``application/octet-stream``): the body is the file; ``task``, ``filename`` (or
  ``format``), ``columns``, ``score_range`` and ``header`` come as query parameters. Handy for
  ``curl --data-binary``.

Query parameters also fill any field a multipart body leaves out.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from service.store import datasets, projects
from service.api.deps import MEMBER, VIEWER, Caller, ContextDep, SessionsDep
from service.api.routes_studies import ProjectParam
from service.store.datasets import Spool
from service.core.schemas import DatasetPublic
from service.core import numeric_limits
from service.core.errors import InvalidInput, NotFound, StsweepError
from service.core.schemas import Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_FIELDS = ("task", "columns", "score_range", "format", "header")
_MAX_FIELD = 64 * 1024
_BOUNDARY = re.compile(rb"^[ -~]{1,200}$")

def dataset_in_scope(dataset_id: str, principal: Caller, sessions: SessionsDep) -> str:
    """A data set id the token sees: anything else (not shaped like an id, no such data set, another project's)
    is the same 404."""
    datasets.validate_id(dataset_id)
    project = datasets.project_of(sessions, dataset_id)
    if project is None or not principal.sees(project):
        raise NotFound(f"dataset {dataset_id} not found", field="dataset_id")
    return dataset_id


DatasetId = Annotated[str, Depends(dataset_in_scope)]
Offset = Annotated[int, Query(**numeric_limits.field("query.offset"))]
Limit = Annotated[int, Query(**numeric_limits.field("query.limit"))]

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file", "task"], "properties": {
            "file": {"type": "string", "format": "binary", "description": ".csv, .tsv, .jsonl/.json or .parquet"},
            "task": {"type": "string", "enum": ["scored_pairs", "labelled_pairs", "pairs", "triplets"]},
            "columns": {"type": "string", "description": 'JSON object role -> column, e.g. {"score": "label"}; '
                                                         'with header=false 0-based positions, e.g. '
                                                         '{"sentence1": 5, "sentence2": 6, "score": 4}'},
            "score_range": {"type": "string", "description": '"low,high" or "[low, high]" (default 0,1)'},
            "format": {"type": "string", "enum": ["csv", "tsv", "jsonl", "parquet"]},
            "header": {"type": "boolean", "default": True,
                       "description": "false: a CSV / TSV without a header row (columns by position)"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
}


class _MultipartUpload:
    """Callbacks for python-multipart's streaming parser: the ``file`` part goes to the spool, small text
    fields are kept, any other part is skipped."""

    def __init__(self, boundary: bytes, spool: Spool) -> None:
        self.spool = spool
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_complete = False
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._kind = "skip"
        self._name = ""
        self._data = bytearray()
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        })

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except StsweepError:  # too large, a bad field, the spool's disk failing
            raise
        except Exception as exc:  # python-multipart's parse errors
            raise InvalidInput(f"malformed multipart body: {exc}", field="file") from exc

    def _part_begin(self) -> None:
        self._headers, self._kind, self._name, self._data = {}, "skip", "", bytearray()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.filename is not None:
                raise InvalidInput("send one file per upload", field="file")
            self.filename = params.get(b"filename", b"").decode("utf-8", "replace")
            self._kind = "file"
        elif name in _FIELDS:
            self._kind, self._name = "field", name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self.spool.write(data[start:end])
        elif self._kind == "field":
            self._data.extend(data[start:end])
            if len(self._data) > _MAX_FIELD:
                raise InvalidInput(f"field too long (over {_MAX_FIELD} bytes)", field=self._name)

    def _part_end(self) -> None:
        if self._kind == "file":
            self.file_complete = True
        elif self._kind == "field":
            try:
                self.fields[self._name] = self._data.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise InvalidInput("not UTF-8 text", field=self._name) from exc

    def _end(self) -> None:
        self.ended = True


def _boundary(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if not _BOUNDARY.fullmatch(boundary):
        raise InvalidInput("multipart body without a valid boundary", field="file")
    return boundary


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY,
             dependencies=MEMBER)
async def upload_dataset(
    request: Request, ctx: ContextDep, principal: Caller, response: Response, project: ProjectParam = None,
    task: str | None = None, columns: str | None = None, score_range: str | None = None,
    filename: Annotated[str | None, Query(max_length=1000)] = None,
    format_: Annotated[str | None, Query(alias="format")] = None,
    header: Annotated[str | None, Query(description="true (default) or false: a CSV / TSV without a header "
                                                    "row, `columns` by 0-based position")] = None,
) -> DatasetPublic:
    """Upload a data set; it is parsed and checked for `task` before it is kept. 201 when new; 200 with the
    existing data set when the same bytes were uploaded before (same id, one copy). 413 past the size limit or
    past the data file limits on rows and decoded size (README, "Data files"), 422 naming the limit or the row
    and column at fault (a cell too large, a column too many, nesting, text that is not text); a refused upload
    leaves nothing behind. The data set goes to the token's project (an admin may name another in `project`);
    de-duplication is per project. 413 naming `max_stored_bytes` when the new bytes would pass the project's
    quota (bytes the project already holds store nothing and pass)."""
    owner = principal.target_project(project)  # before reading the body
    await run_in_threadpool(projects.require_project, ctx.sessions, owner)
    limit = ctx.settings.max_upload_bytes  # of the file; the request guard counts the whole body (api/guard.py)
    query = {"task": task, "columns": columns, "score_range": score_range, "format": format_, "header": header}
    content_type = request.headers.get("content-type", "")
    with Spool(limit) as spool:
        if content_type.lower().startswith("multipart/form-data"):
            form = _MultipartUpload(_boundary(content_type), spool)
            async for chunk in request.stream():
                if chunk:
                    await run_in_threadpool(form.write, chunk)
            if form.filename is None:
                raise InvalidInput("no part named 'file' in the form", field="file")
            if not (form.file_complete and form.ended):
                raise InvalidInput("the upload ended before the form was complete", field="file")
            values = {k: form.fields.get(k) or query[k] for k in _FIELDS}
            name = form.filename
            opts = datasets.parse_options(values["task"], values["columns"], values["score_range"],
                                          values["format"], values["header"])
        else:
            opts = datasets.parse_options(task, columns, score_range, format_, header)  # before reading the body
            async for chunk in request.stream():
                if chunk:
                    await run_in_threadpool(spool.write, chunk)
            name = filename or ""
        dataset, created = await run_in_threadpool(datasets.ingest, ctx, spool, datasets.clean_filename(name),
                                                   opts, owner)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return dataset


@router.get("", response_model=Page[DatasetPublic], response_model_exclude_none=True, dependencies=VIEWER)
def list_datasets(sessions: SessionsDep, principal: Caller, offset: Offset = 0,
                  limit: Limit = 50, project: ProjectParam = None) -> Page[DatasetPublic]:
    """Data sets, newest first (without previews): the token's project's (an admin's: all, or `project`'s)."""
    return datasets.list_datasets(sessions, offset, limit, principal.project_filter(project))


@router.get("/{dataset_id}", response_model=DatasetPublic, dependencies=VIEWER)
def read_dataset(dataset_id: DatasetId, sessions: SessionsDep) -> DatasetPublic:
    """Columns (name, type, role), row count, duplicates, a preview of the first rows, and the studies using it."""
    return datasets.get_dataset(sessions, dataset_id)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=MEMBER)
def delete_dataset(dataset_id: DatasetId, ctx: ContextDep) -> Response:
    """Delete the data set and its stored file; 409 while a study references it."""
    datasets.delete_dataset(ctx, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
