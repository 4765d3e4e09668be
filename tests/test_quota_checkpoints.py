"""The stored-bytes quota and final checkpoints: a trial whose final checkpoint the project has no room for fails
with a failure reason naming the quota, nothing of it is left in the store, and the worker goes on with the next
trial. The worker's publish step is driven for real against a real lease (the check before the upload, the check
under the project's lock where the checkpoint is recorded, the object deleted when that one refuses), and a real
worker process runs a short study into the quota."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.core.errors import PayloadTooLarge
from service.settings import Settings
from service.store import queue
from service.store.db import session_scope
from workers import final_checkpoint
from workers.faults import Faults
from tests.pairs import pair_rows, write_jsonl
from tests.workerproc import run_until_idle

PROJECT = "team-b"
REASON = re.compile(rf"project {PROJECT} is over its stored-bytes quota \(max_stored_bytes=(\d+), used (\d+)\): "
                    r"final checkpoint of (\d+) bytes not kept")


def make_project(client: TestClient, **quotas: int | None) -> None:
    r = client.post("/v1/projects", json={"name": PROJECT, **quotas})
    assert r.status_code == 201, r.text


def set_bytes(client: TestClient, limit: int | None) -> None:
    assert client.patch(f"/v1/projects/{PROJECT}", json={"max_stored_bytes": limit}).status_code == 200


def stored_bytes(client: TestClient) -> int:
    return int(client.get(f"/v1/projects/{PROJECT}").json()["usage"]["stored_bytes"])


def upload(client: TestClient, path: Path) -> str:
    with path.open("rb") as f:
        r = client.post(f"/v1/datasets?project={PROJECT}", files={"file": (path.name, f, "application/octet-stream")},
                        data={"task": "scored_pairs", "score_range": "0,5"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def tiny_study(client: TestClient, tmp_path: Path, n_trials: int) -> str:
    train = upload(client, write_jsonl(tmp_path / "train.jsonl", pair_rows("train", 32, seed=3)))
    dev = upload(client, write_jsonl(tmp_path / "dev.jsonl", pair_rows("dev", 16, seed=4)))
    body: dict[str, Any] = {
        "name": "quota-ckpt", "task": "scored_pairs", "project": PROJECT,
        "data": {"train": {"dataset_id": train}, "eval": {"dataset_id": dev}, "score_range": [0, 5]},
        "search_space": {"learning_rate": {"distribution": "categorical", "choices": [2e-5, 3e-5]},
                         "per_device_train_batch_size": 16, "max_seq_length": 32, "warmup_ratio": 0.0,
                         "num_train_epochs": 1},
        "enqueue_trials": [{"learning_rate": 2e-5}, {"learning_rate": 3e-5}][:n_trials],
        "evaluation": {"every_n_examples": 32, "max_eval_samples": 16},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1},
    }
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def trial_row(ctx: Context, trial_id: int) -> Any:
    with session_scope(ctx.sessions) as s:
        return s.execute(text("SELECT state, checkpoint_key, checkpoint_bytes, lease_token FROM trials "
                              "WHERE id = :id"), {"id": trial_id}).one()


def checkpoint_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "best"
    (folder / "sub").mkdir(parents=True)
    for name, size in (("model.safetensors", 2000), ("config.json", 600), ("sub/tokenizer.json", 400)):
        (folder / name).write_bytes(b"x" * size)
    return folder


def test_publish_step_checks_before_the_upload_and_where_it_is_recorded(client: TestClient, ctx: Context,
                                                                        tmp_path: Path) -> None:
    make_project(client)
    study_id = tiny_study(client, tmp_path, 1)
    used = stored_bytes(client)  # the two data sets
    claimed = queue.claim(ctx.sessions, None, 60)
    assert claimed is not None
    lease = claimed[0].lease
    folder = checkpoint_folder(tmp_path)
    files = final_checkpoint.folder_bytes(folder)
    assert files == 3000
    key = f"studies/{study_id}/trials/0/{lease.token.hex}/final.tar"
    faults = Faults()
    prefix = f"studies/{study_id}"

    # No room for even the files: refused before anything is uploaded.
    set_bytes(client, used + files - 1)
    with pytest.raises(PayloadTooLarge) as before:
        final_checkpoint.upload(ctx, faults, lease, key, folder)
    assert before.value.field == "max_stored_bytes"
    assert REASON.fullmatch(before.value.message).groups() == (str(used + files - 1), str(used), str(files))
    assert ctx.artifacts.list_keys(prefix) == []

    # Room for the files but not for the tar (headers and padding): uploaded, refused where it is recorded, and
    # the object deleted; the trial is still running under its lease, with no checkpoint recorded.
    set_bytes(client, used + files)
    info = final_checkpoint.upload(ctx, faults, lease, key, folder)
    assert info.size > files and ctx.artifacts.list_keys(prefix) == [key]
    finish = queue.Finish(state="complete", value=0.5, checkpoint_key=info.key, checkpoint_sha256=info.sha256,
                          checkpoint_bytes=info.size, examples_seen=32)
    with pytest.raises(PayloadTooLarge) as at_record:
        final_checkpoint.record(ctx, faults, lease, finish)
    assert REASON.fullmatch(at_record.value.message).groups() == (str(used + files), str(used), str(info.size))
    assert ctx.artifacts.list_keys(prefix) == []
    row = trial_row(ctx, lease.trial_id)
    assert (row.state, row.checkpoint_key, row.lease_token) == ("running", None, lease.token)
    assert stored_bytes(client) == used

    # Exactly enough room: recorded and counted; the same finish retried (a commit gone unseen) is recognised,
    # not refused, and the object stays.
    set_bytes(client, used + info.size)
    info = final_checkpoint.upload(ctx, faults, lease, key, folder)
    assert final_checkpoint.record(ctx, faults, lease, finish) == "completed"
    assert final_checkpoint.record(ctx, faults, lease, finish) == "completed"
    assert (trial_row(ctx, lease.trial_id).state, ctx.artifacts.list_keys(prefix)) == ("complete", [key])
    assert stored_bytes(client) == used + info.size


@pytest.mark.slow
def test_a_real_worker_fails_trials_the_quota_cannot_keep_and_goes_on(client: TestClient, ctx: Context,
                                                                      settings: Settings, tmp_path: Path) -> None:
    make_project(client)
    study_id = tiny_study(client, tmp_path, 2)
    limit = stored_bytes(client) + 1000  # the data sets fit, a model does not
    set_bytes(client, limit)
    run_until_idle(settings, tmp_path / "worker.log", 300)

    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "failed" and study["counts"]["failed"] == 2, study
    for trial in client.get(f"/v1/studies/{study_id}/trials").json()["items"]:
        m = REASON.fullmatch(trial["failure_reason"] or "")
        assert m is not None, trial["failure_reason"]
        assert int(m.group(1)) == limit and int(m.group(3)) > 1000
        assert not trial["has_checkpoint"]
    assert [k for k in ctx.artifacts.list_keys(f"studies/{study_id}") if k.endswith("final.tar")] == []
    assert stored_bytes(client) == limit - 1000, "nothing was counted"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert log.count("max_stored_bytes") >= 2 and "Traceback" not in log
