"""A trial finished the way a worker finishes one, without training: claimed, given parameters and completed with a
small final checkpoint in the artifact store, so the checkpoint routes have a real tar to serve."""

from __future__ import annotations

from pathlib import Path

from service.context import Context
from service.store import queue


def finish_with_checkpoint(ctx: Context, study_id: str, tmp_path: Path) -> int:
    """Claim the next trial (it must be of `study_id`), complete it with a final checkpoint; its number."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None and got[1] == study_id, got
    claim = got[0]
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 1e-5}, claim.number)
    info = ctx.artifacts.put_dir(f"studies/{study_id}/trials/{claim.number}/final.tar", folder)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state="complete", value=0.5, metrics={"spearman_cosine": 0.5}, checkpoint_key=info.key,
        checkpoint_sha256=info.sha256, checkpoint_bytes=info.size), pause_after_streak=3)
    return claim.number
