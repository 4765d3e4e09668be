"""Check a study's data references at submission: files must exist under STSWEEP_DATA_ROOT, uploaded
datasets must exist. Returns the dataset ids a study uses, so they cannot be deleted under it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.access import DEFAULT_PROJECT
from service.store.db import session_scope
from service.core.errors import InvalidInput
from service.core.spec import DataRef, StudySpec


def resolve_path(data_root: Path | None, ref_path: str, field: str) -> Path:
    """The file a `path` reference names, proven to lie inside the data root (symlinks resolved)."""
    if data_root is None:
        raise InvalidInput("file data sets need STSWEEP_DATA_ROOT set on the server", field=field)
    root = data_root.resolve()
    candidate = (root / ref_path).resolve()
    if not candidate.is_relative_to(root):
        raise InvalidInput("path leaves STSWEEP_DATA_ROOT", field=field)
    if not candidate.is_file():
        raise InvalidInput(f"no file {ref_path!r} under STSWEEP_DATA_ROOT", field=field)
    return candidate


def check_refs(factory: sessionmaker[Session], data_root: Path | None, spec: StudySpec,
               project: str = DEFAULT_PROJECT) -> dict[str, str]:
    """Validate every reference; returns {role: dataset_id} for uploaded datasets (of `project`: another
    project's data set does not exist for the study)."""
    used: dict[str, str] = {}
    for role, ref in spec.data.refs().items():
        field = f"data.{role}"
        if ref.path is not None:
            resolve_path(data_root, ref.path, f"{field}.path")
        elif ref.dataset_id is not None:
            _require_dataset(factory, ref, f"{field}.dataset_id", project)
            used[role] = ref.dataset_id
    return used


def _require_dataset(factory: sessionmaker[Session], ref: DataRef, field: str, project: str) -> None:
    with session_scope(factory) as s:
        found = s.execute(text("SELECT 1 FROM datasets WHERE id = :id AND project = :p"),
                          {"id": ref.dataset_id, "p": project}).first()
    if found is None:
        raise InvalidInput(f"no dataset {ref.dataset_id!r} (upload it with POST /v1/datasets)", field=field)
