"""Turn a study's data references into local files: `path` in its project's data folder under STSWEEP_DATA_ROOT
(checked again here, as at submission), `dataset_id` from the artifact store (downloaded once into a local
cache, checksum verified)."""

from __future__ import annotations

from pathlib import Path

from service.context import Context
from service.store.data_refs import resolve_path, study_data_folder
from service.store.datasets import dataset_file
from service.core.errors import InvalidInput
from service.core.spec import DataRef
from workers.data import Resolver


def make_resolver(ctx: Context, cache_dir: Path, study_id: str) -> Resolver:
    """The resolver for one study's references. Its project's folder is read at each `path` reference, so a
    project created since the submission is out of reach of a `default` study from then on."""

    def resolve(ref: DataRef) -> Path:
        if ref.path is not None:
            return resolve_path(ctx.settings.data_root, study_data_folder(ctx.sessions, study_id), ref.path,
                                "data.path")
        if ref.dataset_id is None:
            raise InvalidInput("this reference has no local file", field="data")
        row = dataset_file(ctx.sessions, ref.dataset_id)
        if row is None:
            raise InvalidInput(f"dataset {ref.dataset_id} no longer exists", field="data.dataset_id")
        local = cache_dir / f"{row.sha256}.{row.format}"
        if not local.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            ctx.artifacts.get_to_file(row.storage_key, local, expected_sha256=row.sha256)
        return local

    return resolve
