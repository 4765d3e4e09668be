"""A typed Python client for the stsweep API (over httpx): studies, trials, data sets and checkpoints; tokens and
projects (service/client/teams.py).

    with StsweepClient("http://127.0.0.1:8000", token) as api:
        ds = api.upload_dataset("train.jsonl", "scored_pairs", score_range=(0, 5))
        study = api.create_study("study.yaml")
        ...
        folder = api.pull(study.id, "models/best")   # verified, safely extracted, with a README.md model card

Every API error raises StsweepClientError(status, code, message, field) parsed from the API's one error shape
({"error": {"code", "message", "field", "details"}}); a failed connection raises it with status 0.
Local failures of `pull` raise the domain errors of service.artifacts.archive (UnsafeArchive, StorageError).

The server is not trusted (service.client.limits, service.client.transfer): connect and read timeouts; every
answer's headers within the read timeout in total; every body bounded in size (JSON answers
``max_answer_bytes``; a checkpoint its announced size, never more than ``max_download_bytes``) and in rate
(``min_download_rate`` bytes per second over each read-timeout window); checkpoints are fetched raw (no
Content-Encoding), checked against their sha256 and extracted with every tar header bounded and checked first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from service.artifacts.archive import safe_extract
from service.client.limits import ClientLimits
from service.client.model_card import merge_cards, render_model_card
from service.client.transfer import HeaderDeadline, TransferTooLarge, TransferTooSlow, chunks
from service.core.schemas import DatasetPublic, Page, StudyPublic, TrialPage, TrialPublic
from service.client.study_files import parse_study_text
from service.client.teams import TeamCalls

_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class StsweepClientError(Exception):
    """An error answer from the API (status >= 400), or status 0 when the server could not be reached or a
    download failed its checksum."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details or []

    @classmethod
    def from_answer(cls, status: int, reason: str, method: str, body: bytes) -> StsweepClientError:
        """The API's error shape in ``body``, else its first 500 bytes as text (the reason phrase when empty)."""
        try:
            err = json.loads(body)["error"]
            field = err.get("field")
            details = err.get("details")
            return cls(status, str(err.get("code", "http_error")), str(err.get("message", "")),
                       field if isinstance(field, str) else None, details if isinstance(details, list) else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            text = body[:500].decode("utf-8", "replace") if method != "HEAD" else ""
            return cls(status, "http_error", text or reason)

    @classmethod
    def from_response(cls, response: httpx.Response) -> StsweepClientError:
        """From a response whose body was read."""
        return cls.from_answer(response.status_code, response.reason_phrase, response.request.method,
                               response.content)


@dataclass(frozen=True)
class Answer:
    """A whole answer, its body read within the limits."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            raise StsweepClientError(0, "bad_answer", f"the server's answer is not JSON "
                                     f"({self.content[:80]!r})") from None


@dataclass(frozen=True)
class CheckpointInfo:
    """What HEAD on a checkpoint says (no body transferred)."""

    study_id: str
    trial_number: int
    sha256: str
    size: int
    filename: str


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str  # verified against the server's X-Checksum-Sha256
    size: int
    study_id: str
    trial_number: int
    resumed_from: int  # bytes already on disk from an earlier, interrupted download (0: from scratch)


def _seg(value: str | int) -> str:
    return quote(str(value), safe="")


class StsweepClient(TeamCalls):
    """``url``: the API's base URL; ``token``: an API token (``stsweep token create``); ``limits``: download cap,
    timeouts and minimum rate (service.client.limits); ``timeout``, when given, replaces ``limits.read_timeout``.
    ``http``: an httpx.Client to use instead (tests pass FastAPI's TestClient); it keeps its base URL and
    timeouts, and the token is added to its headers when given."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float | None = None,
                 *, limits: ClientLimits | None = None, http: httpx.Client | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.limits = limits or ClientLimits()
        if timeout is not None:
            self.limits = replace(self.limits, read_timeout=timeout)
        if http is None:
            lim = self.limits
            self._http = httpx.Client(
                base_url=url.rstrip("/"), headers=headers,
                timeout=httpx.Timeout(connect=lim.connect_timeout, read=lim.read_timeout, write=lim.read_timeout,
                                      pool=lim.connect_timeout),
                limits=httpx.Limits(max_keepalive_connections=0))  # a new connection each time: HeaderDeadline
            self._owned = True
        else:
            self._http = http
            self._http.headers.update(headers)
            self._owned = False

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def __enter__(self) -> StsweepClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _send(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """The streamed response, its headers complete within ``read_timeout`` seconds of the request."""
        deadline = HeaderDeadline(self.limits.read_timeout)
        try:
            with self._http.stream(method, path, extensions={"trace": deadline.trace}, **kwargs) as response:
                deadline.cancel()
                yield response
        except httpx.HTTPError as exc:
            if deadline.fired:
                raise StsweepClientError(0, "timeout", f"{method} {path}: the server sent no complete answer "
                                         f"within {self.limits.read_timeout:g} s (STSWEEP_READ_TIMEOUT)") from exc
            raise StsweepClientError(0, "connection_error", f"{method} {path}: {exc}") from exc
        finally:
            deadline.cancel()

    def _body(self, response: httpx.Response, limit: int | None = None) -> bytes:
        """The whole (decoded) body, at most ``limit`` (default ``max_answer_bytes``) bytes, not too slow."""
        method, path = response.request.method, response.request.url.path
        limit = self.limits.max_answer_bytes if limit is None else limit
        try:
            return b"".join(chunks(response, limit=limit, min_rate=self.limits.min_download_rate,
                                   window=self.limits.read_timeout))
        except TransferTooLarge:
            raise StsweepClientError(0, "answer_too_large", f"{method} {path}: the server's answer is larger than "
                                     f"{limit:,} bytes") from None
        except TransferTooSlow as exc:
            raise StsweepClientError(0, "too_slow", f"{method} {path}: the server's answer is too slow ({exc}; "
                                     "STSWEEP_MIN_DOWNLOAD_RATE)") from None

    def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        with self._send(method, path, **kwargs) as r:
            body = self._body(r)
        if r.status_code >= 400:
            raise StsweepClientError.from_answer(r.status_code, r.reason_phrase, method, body)
        return Answer(r.status_code, r.headers, body)

    # ------------------------------------------------------------ studies

    def create_study(self, spec: Mapping[str, Any] | str | os.PathLike[str], *,
                     idempotency_key: str | None = None) -> StudyPublic:
        """Submit a study from a dict, or a path to a YAML / JSON file."""
        body = dict(spec) if isinstance(spec, Mapping) else _load_spec(Path(spec))
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return StudyPublic.model_validate(self._request("POST", "/v1/studies", json=body, headers=headers).json())

    def get_study(self, study_id: str) -> StudyPublic:
        return StudyPublic.model_validate(self._request("GET", f"/v1/studies/{_seg(study_id)}").json())

    def list_studies(self, offset: int = 0, limit: int = 50, status: str | None = None) -> Page[StudyPublic]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return Page[StudyPublic].model_validate(self._request("GET", "/v1/studies", params=params).json())

    def list_trials(self, study_id: str, offset: int = 0, limit: int = 100, state: str | None = None,
                    sort: str = "number", order: str = "asc", cursor: str | None = None) -> TrialPage:
        """A page of trials; pass the page's `next_cursor` as `cursor` (same sort, order and state) for the next
        one, which costs a page however deep (`offset` reads every row before it)."""
        params: dict[str, Any] = {"limit": limit, "sort": sort, "order": order}
        if cursor is not None:
            params["cursor"] = cursor
        else:
            params["offset"] = offset
        if state:
            params["state"] = state
        response = self._request("GET", f"/v1/studies/{_seg(study_id)}/trials", params=params)
        return TrialPage.model_validate(response.json())

    def get_trial(self, study_id: str, number: int) -> TrialPublic:
        response = self._request("GET", f"/v1/studies/{_seg(study_id)}/trials/{_seg(number)}")
        return TrialPublic.model_validate(response.json())

    def _action(self, study_id: str, action: str) -> StudyPublic:
        response = self._request("POST", f"/v1/studies/{_seg(study_id)}/{action}")
        return StudyPublic.model_validate(response.json())

    def pause_study(self, study_id: str) -> StudyPublic:
        return self._action(study_id, "pause")

    def resume_study(self, study_id: str) -> StudyPublic:
        return self._action(study_id, "resume")

    def stop_study(self, study_id: str) -> StudyPublic:
        return self._action(study_id, "stop")

    def extend_study(self, study_id: str, n_trials: int) -> StudyPublic:
        """Add `n_trials` search trials (a stopped or completed study runs again). Not idempotent: a retried
        request adds them again."""
        response = self._request("POST", f"/v1/studies/{_seg(study_id)}/extend", json={"n_trials": n_trials})
        return StudyPublic.model_validate(response.json())

    def delete_study(self, study_id: str) -> None:
        """Delete the study, its trials and its checkpoints."""
        self._request("DELETE", f"/v1/studies/{_seg(study_id)}")

    # ------------------------------------------------------------ data sets

    def upload_dataset(self, path: str | os.PathLike[str], task: str,
                       columns: Mapping[str, str | int] | None = None,
                       score_range: tuple[float, float] | None = None,
                       format: str | None = None,  # noqa: A002 - the API's field name
                       header: bool = True) -> DatasetPublic:
        """Upload a CSV / TSV / JSONL / Parquet file (streamed from disk). The same bytes give the same id.

        ``header=False``: a CSV / TSV without a header row; ``columns`` then gives each role's 0-based position,
        e.g. the STS benchmark's ``{"sentence1": 5, "sentence2": 6, "score": 4}``."""
        path = Path(path)
        fields: dict[str, str] = {"task": task}
        if columns:
            fields["columns"] = json.dumps(dict(columns))
        if score_range is not None:
            fields["score_range"] = json.dumps([float(score_range[0]), float(score_range[1])])
        if format:
            fields["format"] = format
        if not header:
            fields["header"] = "false"
        with path.open("rb") as f:
            response = self._request("POST", "/v1/datasets", data=fields,
                                     files={"file": (path.name, f, "application/octet-stream")})
        return DatasetPublic.model_validate(response.json())

    def list_datasets(self, offset: int = 0, limit: int = 50) -> Page[DatasetPublic]:
        response = self._request("GET", "/v1/datasets", params={"offset": offset, "limit": limit})
        return Page[DatasetPublic].model_validate(response.json())

    def get_dataset(self, dataset_id: str) -> DatasetPublic:
        return DatasetPublic.model_validate(self._request("GET", f"/v1/datasets/{_seg(dataset_id)}").json())

    def delete_dataset(self, dataset_id: str) -> None:
        """Refused (409) while a study references it."""
        self._request("DELETE", f"/v1/datasets/{_seg(dataset_id)}")

    # ------------------------------------------------------------ checkpoints

    @staticmethod
    def _checkpoint_path(study_id: str, trial_number: int | None) -> str:
        if trial_number is None:
            return f"/v1/studies/{_seg(study_id)}/best-checkpoint"
        return f"/v1/studies/{_seg(study_id)}/trials/{_seg(trial_number)}/checkpoint"

    def checkpoint_info(self, study_id: str, trial_number: int | None = None) -> CheckpointInfo:
        """HEAD the best (or one trial's) checkpoint: which trial, its sha256 and size."""
        r = self._request("HEAD", self._checkpoint_path(study_id, trial_number))
        disposition = r.headers.get("content-disposition", "")
        size = _int_header(r.headers, "content-length")
        assert size is not None
        return CheckpointInfo(study_id=r.headers.get("x-study-id", study_id),
                              trial_number=_trial_number(r.headers), sha256=_sha256_header(r.headers), size=size,
                              filename=disposition.partition('filename="')[2].rstrip('"'))

    def download_best_checkpoint(self, study_id: str, dest_tar: str | os.PathLike[str], resume: bool = True, *,
                                 max_bytes: int | None = None) -> Download:
        """Download the best trial's checkpoint tar to ``dest_tar`` (verified by sha256, published atomically).

        Bytes arrive in ``<dest_tar>.part``; with ``resume`` a part left by an interrupted download is continued
        with an HTTP Range request guarded by If-Range, so if the best checkpoint changed meanwhile the server
        sends the new one whole and the part is restarted. At most ``max_bytes`` (default
        ``limits.max_download_bytes``) and never more than the server announced."""
        return self._download(self._checkpoint_path(study_id, None), study_id, Path(dest_tar), resume,
                              max_bytes or self.limits.max_download_bytes)

    def download_trial_checkpoint(self, study_id: str, trial_number: int, dest_tar: str | os.PathLike[str],
                                  resume: bool = True, *, max_bytes: int | None = None) -> Download:
        """Like download_best_checkpoint, for one finished trial that still has its checkpoint."""
        return self._download(self._checkpoint_path(study_id, trial_number), study_id, Path(dest_tar), resume,
                              max_bytes or self.limits.max_download_bytes)

    def _download(self, path: str, study_id: str, dest: Path, resume: bool, max_bytes: int, *,
                  retried: bool = False) -> Download:
        part = dest.with_name(dest.name + ".part")
        etag_file = dest.with_name(dest.name + ".part.etag")
        dest.parent.mkdir(parents=True, exist_ok=True)
        offset, etag = 0, None
        if resume and part.is_file() and etag_file.is_file():
            offset, etag = part.stat().st_size, etag_file.read_text().strip() or None
        if not offset or not etag or offset > max_bytes:
            offset, etag = 0, None
            _remove(part, etag_file)
        headers = {"Accept-Encoding": "identity"}
        if offset and etag:
            headers.update({"Range": f"bytes={offset}-", "If-Range": etag})
        with self._send("GET", path, headers=headers) as r:
            if r.status_code == 416 and not retried:  # the part is at or past the end: start over once
                _remove(part, etag_file)
                return self._download(path, study_id, dest, False, max_bytes, retried=True)
            if r.status_code >= 400:
                raise StsweepClientError.from_answer(r.status_code, r.reason_phrase, "GET", self._body(r))
            if r.status_code not in (200, 206):
                raise StsweepClientError(r.status_code, "bad_answer", f"GET {path}: expected the checkpoint, got "
                                         f"{r.status_code} {r.reason_phrase}")
            try:
                encoding = r.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise StsweepClientError(0, "bad_answer", f"the server sent the checkpoint with Content-Encoding "
                                             f"{encoding!r}; the client asked for the tar as is (identity)")
                start, total = _checkpoint_extent(r, offset)
            except StsweepClientError:
                _remove(part, etag_file)
                raise
            if total is not None and total > max_bytes:
                _remove(part, etag_file)
                raise StsweepClientError(0, "too_large", f"the checkpoint is {total:,} bytes, more than the "
                                         f"{max_bytes:,} allowed (--max-bytes, STSWEEP_MAX_DOWNLOAD_BYTES)")
            sha256, trial_number = _sha256_header(r.headers), _trial_number(r.headers)
            if start:
                mode = "ab"
            else:
                offset, mode = 0, "wb"
                etag_file.write_text(r.headers.get("etag", f'"{sha256}"'))
            self._receive(r, part, mode, (total if total is not None else max_bytes) - offset, etag_file,
                          announced=total is not None)
        actual, size = _sha256_file(part)
        if (total is not None and size != total) or actual != sha256:
            _remove(part, etag_file)
            expected = f"{total} bytes" if total is not None else "an unannounced size"
            raise StsweepClientError(0, "checksum_mismatch", f"downloaded {size} bytes with sha256 {actual}; "
                                     f"expected {expected} with sha256 {sha256}")
        os.replace(part, dest)
        _remove(etag_file)
        return Download(path=dest, sha256=actual, size=size, study_id=r.headers.get("x-study-id", study_id),
                        trial_number=trial_number, resumed_from=offset)

    def _receive(self, r: httpx.Response, part: Path, mode: str, limit: int, etag_file: Path, *,
                 announced: bool) -> None:
        """The body as sent (no Content-Encoding) into ``part``, at most ``limit`` bytes. An interrupted download
        keeps what it got for the next attempt; one too large or too slow keeps nothing."""
        with part.open(mode) as f:
            try:
                for chunk in chunks(r, limit=limit, min_rate=self.limits.min_download_rate,
                                    window=self.limits.read_timeout, raw=True):
                    f.write(chunk)
            except httpx.HTTPError as exc:
                f.close()
                if part.stat().st_size == 0:
                    _remove(part, etag_file)
                raise StsweepClientError(0, "connection_error", f"download interrupted: {exc}") from exc
            except TransferTooLarge:
                f.close()
                _remove(part, etag_file)
                why = (f"the server sent more than the {limit:,} bytes it announced" if announced else
                       f"the server announced no size and sent more than {limit:,} bytes (--max-bytes, "
                       "STSWEEP_MAX_DOWNLOAD_BYTES)")
                raise StsweepClientError(0, "too_large", why) from None
            except TransferTooSlow as exc:
                f.close()
                _remove(part, etag_file)
                raise StsweepClientError(0, "too_slow", f"download too slow: {exc} (STSWEEP_MIN_DOWNLOAD_RATE "
                                         "over STSWEEP_READ_TIMEOUT)") from None
            f.flush()
            os.fsync(f.fileno())

    def pull(self, study_id: str, out_dir: str | os.PathLike[str], *, trial_number: int | None = None,
             resume: bool = True, max_bytes: int | None = None) -> Path:
        """Download the best (or one trial's) checkpoint (at most ``max_bytes``, default
        ``limits.max_download_bytes``), verify its sha256, extract it safely into ``out_dir`` (which must not
        exist, or be empty) and write its README.md model card. Returns ``out_dir``.

        The tar arrives beside ``out_dir`` as ``.<name>.download.tar.part``; an interrupted download keeps it, so
        the next call resumes it. Anything else that fails (a refused download or archive, a failed answer after
        the download) leaves nothing behind."""
        out = Path(out_dir).resolve()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not an empty folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tar = out.parent / f".{out.name}.download.tar"
        dl = self._download(self._checkpoint_path(study_id, trial_number), study_id, tar, resume,
                            max_bytes or self.limits.max_download_bytes)
        staging = out.parent / f".{out.name}.pull"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            study = self.get_study(study_id)
            trial = self.get_trial(study_id, dl.trial_number)
            safe_extract(tar, staging)
            readme = staging / "README.md"
            existing = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else None
            readme.write_text(merge_cards(render_model_card(study, trial), existing), encoding="utf-8")
            if out.exists():
                out.rmdir()  # empty, checked above
            os.rename(staging, out)
        finally:  # the tar was complete: a failed pull starts again (only a .part resumes)
            shutil.rmtree(staging, ignore_errors=True)
            tar.unlink(missing_ok=True)
        return out


def _int_header(headers: httpx.Headers, name: str, *, required: bool = True) -> int | None:
    value = headers.get(name)
    if value is None and not required:
        return None
    if value is None or not value.strip().isdigit() or not value.isascii():
        raise StsweepClientError(0, "bad_answer", f"the server's {name} header is "
                                 f"{'missing' if value is None else 'not a whole number'}")
    return int(value)


def _trial_number(headers: httpx.Headers) -> int:
    number = _int_header(headers, "x-trial-number")
    assert number is not None
    return number


def _sha256_header(headers: httpx.Headers) -> str:
    value = headers.get("x-checksum-sha256", "").strip().lower()
    if not _SHA256.fullmatch(value):
        raise StsweepClientError(0, "bad_answer", "the server's X-Checksum-Sha256 header is missing or not a "
                                 "sha256 in hex")
    return value


def _checkpoint_extent(r: httpx.Response, offset: int) -> tuple[int, int | None]:
    """(where the body starts in the file, the file's whole size or None when not announced)."""
    length = _int_header(r.headers, "content-length", required=False)
    if r.status_code != 206:
        return 0, length
    match = _CONTENT_RANGE.fullmatch(r.headers.get("content-range", "").strip())
    if match is None:
        raise StsweepClientError(206, "bad_range", "the server's Content-Range header is missing or malformed")
    start, end = int(match.group(1)), int(match.group(2))
    if start != offset:
        raise StsweepClientError(206, "bad_range", f"asked for bytes from {offset}, got {start}")
    if end < start or (length is not None and length != end - start + 1):
        raise StsweepClientError(206, "bad_range", "the server's Content-Range and Content-Length disagree")
    if match.group(3) != "*" and int(match.group(3)) != end + 1:
        raise StsweepClientError(206, "bad_range", "the server's Content-Range does not reach the end of the file")
    return start, end + 1


def _load_spec(path: Path) -> dict[str, Any]:
    return parse_study_text(path.read_text(encoding="utf-8"), str(path), is_json=path.suffix.lower() == ".json")


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _remove(*paths: Path) -> None:
    for p in paths:
        with suppress(FileNotFoundError):
            p.unlink()
