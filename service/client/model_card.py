"""The model card (README.md) that goes with a pulled checkpoint: pure functions from the API's own shapes.

The stored checkpoint tar is served byte-for-byte (its sha256 is the one in the database), and a study's test
score is only known once it completes, so the card is written by the client after extraction (`pull`), from
`GET /v1/studies/{id}` and the trial. Any server code that wants a card renders it with the same function.
"""

from __future__ import annotations

import json
from typing import Any

from service.core.schemas import StudyPublic, TrialPublic

_FRONT_MATTER = "---\n"
EXISTING_CARD_HEADING = "## Card written by sentence-transformers at save time"


_PRECISION_NOTES = {
    "fp32": " (float32)",
    "bf16": " (bfloat16 autocast; the weights were kept, and are stored, in float32)",
    "fp16": " (float16 autocast with loss scaling; the weights were kept, and are stored, in float32)",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return "`" + str(value) + "`" if isinstance(value, str) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _source(ref: dict[str, Any]) -> str:
    if ref.get("dataset_id"):
        return f"uploaded dataset `{ref['dataset_id']}`"
    if ref.get("path"):
        return f"file `{ref['path']}` (under STSWEEP_DATA_ROOT)"
    if ref.get("hf"):
        config = f", config `{ref['config']}`" if ref.get("config") else ""
        return f"Hugging Face dataset `{ref['hf']}`{config}, split `{ref.get('split')}`"
    return "unknown"


def _data_rows(data: dict[str, Any]) -> list[str]:
    rows: list[str] = []
    split = data.get("split")
    if split:
        src = _source(split.get("source") or {})
        rows.append(f"| train / eval / test | {_cell(src)}, split with seed {split.get('seed', 0)}: eval "
                    f"{split.get('eval_fraction')}, test {split.get('test_fraction')} |")
    for role in ("train", "eval", "test"):
        if data.get(role):
            rows.append(f"| {role} | {_cell(_source(data[role]))} |")
    return rows


def render_model_card(study: StudyPublic, trial: TrialPublic) -> str:
    """Markdown (with Hugging Face front matter) for ``trial`` of ``study``: study name, base model, data sets,
    the trial's hyperparameters and the precision it trained in, its eval scores next to the baseline's, and the
    test score when known."""
    spec = study.spec or {}
    base_model = str(spec.get("base_model") or "unknown")
    metric = str(study.objective.get("metric") or "objective")
    direction = str(study.objective.get("direction") or "maximize")
    is_best = study.best is not None and study.best.trial_number == trial.number
    lines = [
        _FRONT_MATTER.rstrip("\n"),
        "library_name: sentence-transformers",
        f"base_model: {json.dumps(base_model)}",
        "tags:", "- sentence-transformers", "- sentence-similarity", "- stsweep",
        "---", "",
        f"# {study.name}: trial {trial.number}", "",
        f"Fine-tuned from `{base_model}` by the stsweep study `{study.id}` ({study.name}), task "
        f"`{spec.get('task', 'unknown')}`. This is trial {trial.number}"
        + (", the study's best trial." if is_best else "."), "",
    ]
    if spec.get("description"):
        lines += [str(spec["description"]), ""]

    lines += ["## Data sets", "", "| role | source |", "|---|---|"]
    data = spec.get("data") or {}
    lines += _data_rows(data) or ["| - | not recorded |"]
    if data.get("columns"):
        lines += ["", "Columns: " + ", ".join(f"`{k}` <- `{v}`" for k, v in data["columns"].items())]
    lines.append("")

    lines += ["## Hyperparameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(_fmt(v))} |" for k, v in sorted((trial.params or {}).items())]
    if not trial.params:
        lines.append("| - | none recorded |")
    lines.append("")
    if trial.precision:
        lines += [f"Trained in `{trial.precision}`{_PRECISION_NOTES.get(trial.precision, '')}.", ""]

    baseline = study.baseline.value if study.baseline else None
    lines += ["## Evaluation", "",
              f"Objective: `{metric}` on the full eval split ({direction}). The baseline is the base model, untrained.",
              "", "| metric | this model | baseline |", "|---|---|---|",
              f"| {_cell(metric)} (objective) | {_fmt(trial.value) if trial.value is not None else '-'} | "
              f"{_fmt(baseline) if baseline is not None else '-'} |"]
    for name, value in sorted((trial.metrics or {}).items()):
        if name != metric and isinstance(value, (int, float)):
            lines.append(f"| {_cell(name)} | {_fmt(float(value))} | - |")
    lines.append("")
    if study.test is not None and is_best:
        lines += [f"**Test split** ({study.test.metric}, evaluated once, after the study, never used to pick the "
                  f"winner): {_fmt(study.test.value)}", ""]
    elif is_best and study.status != "completed":
        lines += [f"Test split: not evaluated yet (the study is {study.status}).", ""]
    else:
        lines += ["Test split: not evaluated for this trial.", ""]

    lines += ["## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
              'model = SentenceTransformer("path/to/this/folder")',
              'embeddings = model.encode(["A sentence.", "Another one."])', "```", ""]
    return "\n".join(lines)


def strip_front_matter(markdown: str) -> str:
    if markdown.startswith(_FRONT_MATTER):
        end = markdown.find("\n---", len(_FRONT_MATTER) - 1)
        if end != -1:
            return markdown[end + 4:].lstrip("\n")
    return markdown


def merge_cards(ours: str, existing: str | None) -> str:
    """Our card first; a card already in the checkpoint (sentence-transformers writes one on save) follows,
    without its front matter, so the folder keeps one README.md with one front matter."""
    if not existing or not existing.strip():
        return ours
    return f"{ours.rstrip()}\n\n{EXISTING_CARD_HEADING}\n\n{strip_front_matter(existing).strip()}\n"
