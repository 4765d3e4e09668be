"""What checkpoints a study keeps: its top-k finished trials; nothing once the study is deleted."""

from __future__ import annotations

from service.context import Context


def study_prefix(study_id: str) -> str:
    return f"studies/{study_id}/"


def delete_study_artifacts(ctx: Context, study_id: str) -> None:
    ctx.artifacts.delete_prefix(study_prefix(study_id))
