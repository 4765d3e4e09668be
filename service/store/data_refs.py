"""Check a study's data references at submission: files must lie in its project's data folder under
STSWEEP_DATA_ROOT, uploaded datasets must exist in its project. Returns the dataset ids a study uses, so they
cannot be deleted under it. The worker resolves `path` references with the same function (`resolve_path`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.access import DEFAULT_PROJECT
from service.store.db import session_scope
from service.core.errors import InvalidInput, NotFound
from service.core.spec import DataRef, StudySpec


@dataclass(frozen=True)
class DataFolder:
    """Where a project's `path` references resolve: `data_dir` under the data root ('' for `default`: the root
    itself), and the other projects' folders (`others`), which it must never reach (the root holds them)."""

    project: str
    data_dir: str
    others: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"STSWEEP_DATA_ROOT/{self.data_dir}" if self.data_dir else "STSWEEP_DATA_ROOT"


def _folder(s: Session, project: str) -> DataFolder:
    rows = s.execute(text("SELECT name, data_dir FROM projects")).all()
    mine = [r.data_dir for r in rows if r.name == project]
    if not mine:
        raise NotFound(f"project {project!r} not found", field="project")
    others = tuple(sorted(r.data_dir for r in rows if r.name != project and r.data_dir))
    return DataFolder(project, mine[0], others)


def project_data_folder(factory: sessionmaker[Session], project: str) -> DataFolder:
    """The data folder of `project` (NotFound, field `project`, when there is no such project)."""
    with session_scope(factory) as s:
        return _folder(s, project)


def study_data_folder(factory: sessionmaker[Session], study_id: str) -> DataFolder:
    """The data folder of the study's project, read now (for a worker; NotFound once the study is gone)."""
    with session_scope(factory) as s:
        project = s.execute(text("SELECT project FROM studies WHERE id = :id"), {"id": study_id}).scalar_one_or_none()
        if project is None:
            raise NotFound(f"study {study_id} not found", field="study_id")
        return _folder(s, project)


def resolve_path(data_root: Path | None, folder: DataFolder, ref_path: str, field: str) -> Path:
    """The file a `path` reference names, proven (every link resolved) to lie in the project's folder under the
    data root and in no other project's folder. One message for a file that is missing and one that lies
    elsewhere, so a refusal tells nothing about what exists outside the project's folder."""
    if data_root is None:
        raise InvalidInput("file data sets need STSWEEP_DATA_ROOT set on the server", field=field)
    root = data_root.resolve()
    base = (root / folder.data_dir).resolve()
    candidate = (base / ref_path).resolve()
    if not (candidate.is_relative_to(base) and candidate.is_relative_to(root)
            and not _in_another_folder(root, candidate, folder.others) and candidate.is_file()):
        raise InvalidInput(f"{ref_path!r} is not a file in the project's data folder ({folder.where})", field=field)
    return candidate


def _in_another_folder(root: Path, candidate: Path, others: tuple[str, ...]) -> bool:
    """Whether the resolved `candidate` lies in another project's folder: named by its first component under the
    root, or where that folder's own links lead."""
    top = candidate.relative_to(root).parts[:1]
    return any(top == (other,) or candidate.is_relative_to((root / other).resolve()) for other in others)


def check_refs(factory: sessionmaker[Session], data_root: Path | None, spec: StudySpec,
               project: str = DEFAULT_PROJECT) -> dict[str, str]:
    """Validate every reference; returns {role: dataset_id} for uploaded datasets (of `project`: another
    project's data set does not exist for the study), and resolves files in `project`'s data folder."""
    used: dict[str, str] = {}
    folder: DataFolder | None = None
    for role, ref in spec.data.refs().items():
        field = f"data.{role}"
        if ref.path is not None:
            folder = folder or project_data_folder(factory, project)
            resolve_path(data_root, folder, ref.path, f"{field}.path")
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
