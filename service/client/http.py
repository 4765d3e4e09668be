"""A typed Python client for the stsweep API (over httpx): studies, trials, data sets and checkpoints.

    with StsweepClient("http://127.0.0.1:8000", token) as api:
        ds = api.upload_dataset("train.jsonl", "scored_pairs", score_range=(0, 5))
        study = api.create_study("study.yaml")
        ...
        folder = api.pull(study.id, "models/best")   # verified, safely extracted, with a README.md model card

Every API error raises StsweepClientError(status, code, message, field) parsed from the API's one error shape
({"error": {"code", "message", "field", "details"}}); a failed connection raises it with status 0.
Local failures of `pull` raise the domain errors of service.artifacts.archive (UnsafeArchive, StorageError).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from service.artifacts.archive import safe_extract
from service.core.errors import UnsafeArchive
from service.client.model_card import merge_cards, render_model_card
from service.core.schemas import DatasetPublic, Page, StudyPublic, TrialPublic
from service.client.study_files import parse_study_text

_CHUNK = 1024 * 1024


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
    def from_response(cls, response: httpx.Response) -> StsweepClientError:
        try:
            body = response.json()
            err = body["error"]
            return cls(response.status_code, str(err.get("code", "http_error")), str(err.get("message", "")),
                       err.get("field"), err.get("details"))
        except (ValueError, KeyError, TypeError, AttributeError):
            text = response.text[:500] if response.request.method != "HEAD" else ""
            return cls(response.status_code, "http_error", text or response.reason_phrase)


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


class StsweepClient:
    """``url``: the API's base URL; ``token``: an API token (``stsweep token create``); ``timeout`` in seconds
    (connect / read per chunk, not a whole download). ``http``: an httpx.Client to use instead (tests pass
    FastAPI's TestClient); it keeps its base URL and the token is added to its headers when given."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0, *,
                 http: httpx.Client | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if http is None:
            self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
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

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StsweepClientError(0, "connection_error", f"{method} {path}: {exc}") from exc
        if response.status_code >= 400:
            raise StsweepClientError.from_response(response)
        return response

    @contextmanager
    def _stream(self, path: str, headers: Mapping[str, str]) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", path, headers=dict(headers)) as response:
                if response.status_code >= 400 and response.status_code != 416:
                    response.read()
                    raise StsweepClientError.from_response(response)
                yield response
        except httpx.HTTPError as exc:
            raise StsweepClientError(0, "connection_error", f"GET {path}: {exc}") from exc

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
                    sort: str = "number", order: str = "asc") -> Page[TrialPublic]:
        params: dict[str, Any] = {"offset": offset, "limit": limit, "sort": sort, "order": order}
        if state:
            params["state"] = state
        response = self._request("GET", f"/v1/studies/{_seg(study_id)}/trials", params=params)
        return Page[TrialPublic].model_validate(response.json())

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
        return CheckpointInfo(study_id=r.headers.get("x-study-id", study_id),
                              trial_number=int(r.headers["x-trial-number"]), sha256=r.headers["x-checksum-sha256"],
                              size=int(r.headers["content-length"]),
                              filename=disposition.partition('filename="')[2].rstrip('"'))

    def download_best_checkpoint(self, study_id: str, dest_tar: str | os.PathLike[str],
                                 resume: bool = True) -> Download:
        """Download the best trial's checkpoint tar to ``dest_tar`` (verified by sha256, published atomically).

        Bytes arrive in ``<dest_tar>.part``; with ``resume`` a part left by an interrupted download is continued
        with an HTTP Range request guarded by If-Range, so if the best checkpoint changed meanwhile the server
        sends the new one whole and the part is restarted."""
        return self._download(self._checkpoint_path(study_id, None), study_id, Path(dest_tar), resume)

    def download_trial_checkpoint(self, study_id: str, trial_number: int, dest_tar: str | os.PathLike[str],
                                  resume: bool = True) -> Download:
        """Like download_best_checkpoint, for one finished trial that still has its checkpoint."""
        return self._download(self._checkpoint_path(study_id, trial_number), study_id, Path(dest_tar), resume)

    def _download(self, path: str, study_id: str, dest: Path, resume: bool, *, retried: bool = False) -> Download:
        part = dest.with_name(dest.name + ".part")
        etag_file = dest.with_name(dest.name + ".part.etag")
        dest.parent.mkdir(parents=True, exist_ok=True)
        offset, etag = 0, None
        if resume and part.is_file() and etag_file.is_file():
            offset, etag = part.stat().st_size, etag_file.read_text().strip() or None
        if not offset or not etag:
            offset, etag = 0, None
            _remove(part, etag_file)
        headers = {"Range": f"bytes={offset}-", "If-Range": etag} if offset and etag else {}
        with self._stream(path, headers) as r:
            if r.status_code == 416:  # the part is at or past the end: start over once
                if retried:
                    r.read()
                    raise StsweepClientError.from_response(r)
                _remove(part, etag_file)
                return self._download(path, study_id, dest, False, retried=True)
            sha256 = r.headers["x-checksum-sha256"].lower()
            total = int(r.headers["content-length"])
            if r.status_code == 206:
                start = int(r.headers["content-range"].split(" ", 1)[1].split("-", 1)[0])
                if start != offset:
                    raise StsweepClientError(206, "bad_range", f"asked for bytes from {offset}, got {start}")
                total += offset
                mode = "ab"
            else:
                offset, mode = 0, "wb"
                etag_file.write_text(r.headers.get("etag", f'"{sha256}"'))
            with part.open(mode) as f:
                try:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
                except httpx.HTTPError as exc:  # keep the part for the next attempt
                    raise StsweepClientError(0, "connection_error", f"download interrupted: {exc}") from exc
                f.flush()
                os.fsync(f.fileno())
        actual, size = _sha256_file(part)
        if size != total or actual != sha256:
            _remove(part, etag_file)
            raise StsweepClientError(0, "checksum_mismatch", f"downloaded {size} bytes with sha256 {actual}; "
                                     f"expected {total} bytes with sha256 {sha256}")
        os.replace(part, dest)
        _remove(etag_file)
        return Download(path=dest, sha256=actual, size=size, study_id=r.headers.get("x-study-id", study_id),
                        trial_number=int(r.headers["x-trial-number"]), resumed_from=offset)

    def pull(self, study_id: str, out_dir: str | os.PathLike[str], *, trial_number: int | None = None,
             resume: bool = True) -> Path:
        """Download the best (or one trial's) checkpoint, verify its sha256, extract it safely into ``out_dir``
        (which must not exist, or be empty) and write its README.md model card. Returns ``out_dir``.

        The tar is kept beside ``out_dir`` as ``.<name>.download.tar`` until the pull succeeds, so an interrupted
        pull resumes the download on the next call."""
        out = Path(out_dir).resolve()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not an empty folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tar = out.parent / f".{out.name}.download.tar"
        dl = self._download(self._checkpoint_path(study_id, trial_number), study_id, tar, resume)
        study = self.get_study(study_id)
        trial = self.get_trial(study_id, dl.trial_number)
        staging = out.parent / f".{out.name}.pull"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            safe_extract(tar, staging)
            readme = staging / "README.md"
            existing = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else None
            readme.write_text(merge_cards(render_model_card(study, trial), existing), encoding="utf-8")
            if out.exists():
                out.rmdir()  # empty, checked above
            os.rename(staging, out)
        except UnsafeArchive:
            shutil.rmtree(staging, ignore_errors=True)
            tar.unlink(missing_ok=True)  # verified but hostile: nothing worth resuming
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        tar.unlink(missing_ok=True)
        return out


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
