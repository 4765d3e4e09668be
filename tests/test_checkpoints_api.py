"""Checkpoints by study id: the stored tar streamed byte-for-byte with its sha256, HTTP Range resuming to the
same bytes (by hand and through the client), 416, per-trial 404s, and `pull` extracting safely with a card."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.store import queue
from service.client.http import StsweepClient, StsweepClientError
from service.context import Context
from service.store.db import session_scope
from service.core.errors import UnsafeArchive
from service.client.model_card import EXISTING_CARD_HEADING
from tests.studyspecs import contract_study

ST_CARD = "---\nlibrary_name: sentence-transformers\n---\n\n# all-MiniLM-L6-v2 fine-tuned\n\nSaved by ST.\n"


def model_folder(root: Path, seed: int) -> Path:
    """A small stand-in for a saved SentenceTransformer folder."""
    (root / "1_Pooling").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"seed": seed, "hidden_size": 8}))
    (root / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "x"}]')
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (root / "model.safetensors").write_bytes(os.urandom(200_000 + seed))
    (root / "README.md").write_text(ST_CARD)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def finish_trial(ctx: Context, state: str, value: float | None, folder: Path | None) -> tuple[int, Any]:
    """Claim the next slot, give it parameters, and finish it (with a checkpoint when `folder` is given)."""
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None
    claim, study_id = got
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 2e-5 * (claim.number + 1),
                                                 "per_device_train_batch_size": 16, "loss": "CoSENTLoss"},
                     claim.number)
    info = None
    if folder is not None:
        info = ctx.artifacts.put_dir(f"studies/{study_id}/trials/{claim.number}/final.tar", folder)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state=state, value=value, metrics={"spearman_cosine": value, "pearson_cosine": 0.5} if value else None,
        checkpoint_key=info.key if info else None, checkpoint_sha256=info.sha256 if info else None,
        checkpoint_bytes=info.size if info else None), pause_after_streak=3)
    return claim.number, info


@pytest.fixture
def study(client: TestClient, ctx: Context, data_root: Path, tmp_path: Path) -> dict[str, Any]:
    """A completed study: trial 0 complete (0.80), trial 1 complete and best (0.85), trial 2 pruned."""
    (data_root / "stsb").mkdir()
    for name in ("train", "dev", "test"):
        (data_root / "stsb" / f"{name}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')
    body = contract_study(name="ckpt-study", budget={"n_trials": 3, "max_concurrent_trials": 3})
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    folders = {n: model_folder(tmp_path / f"trial{n}", n) for n in (0, 1)}
    _, info0 = finish_trial(ctx, "complete", 0.80, folders[0])
    _, info1 = finish_trial(ctx, "complete", 0.85, folders[1])
    finish_trial(ctx, "pruned", None, None)
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET baseline_value = 0.70, baseline_subset_value = 0.69, "
                       "test_metric = 'spearman_cosine', test_value = 0.8123 WHERE id = :id"), {"id": study_id})
    assert client.get(f"/v1/studies/{study_id}").json()["status"] == "completed"
    return {"id": study_id, "folders": folders, "infos": {0: info0, 1: info1}}


def test_best_checkpoint_streams_the_stored_tar(client: TestClient, study: dict[str, Any]) -> None:
    info = study["infos"][1]
    r = client.get(f"/v1/studies/{study['id']}/best-checkpoint")
    assert r.status_code == 200, r.text
    assert hashlib.sha256(r.content).hexdigest() == info.sha256 == r.headers["x-checksum-sha256"]
    assert r.headers["etag"] == f'"{info.sha256}"'
    assert int(r.headers["content-length"]) == len(r.content) == info.size
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/x-tar"
    assert r.headers["content-disposition"] == 'attachment; filename="ckpt-study-trial-1.tar"'
    assert r.headers["x-trial-number"] == "1"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert "model.safetensors" in tar.getnames()

    head = client.head(f"/v1/studies/{study['id']}/best-checkpoint")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(info.size)
    assert head.headers["x-checksum-sha256"] == info.sha256


def test_range_requests_resume_to_the_same_bytes(client: TestClient, study: dict[str, Any]) -> None:
    url = f"/v1/studies/{study['id']}/best-checkpoint"
    full = client.get(url).content
    size, cut = len(full), 70_001
    first = client.get(url, headers={"Range": f"bytes=0-{cut - 1}"})
    assert first.status_code == 206 and first.headers["content-range"] == f"bytes 0-{cut - 1}/{size}"
    assert first.headers["content-length"] == str(cut)
    etag = first.headers["etag"]
    rest = client.get(url, headers={"Range": f"bytes={cut}-", "If-Range": etag})
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    assert first.content + rest.content == full
    assert rest.headers["x-checksum-sha256"] == hashlib.sha256(full).hexdigest()  # of the whole tar

    suffix = client.get(url, headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == full[-100:]
    past = client.get(url, headers={"Range": f"bytes=10-{size * 2}"})
    assert past.status_code == 206 and past.content == full[10:]
    stale = client.get(url, headers={"Range": f"bytes={cut}-", "If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == full  # the object changed: send it whole
    ignored = client.get(url, headers={"Range": "bytes=0-1,5-9"})  # multi-range: served whole
    assert ignored.status_code == 200 and ignored.content == full

    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = client.get(url, headers={"Range": bad})
        assert r.status_code == 416, (bad, r.status_code)
        assert r.json()["error"]["code"] == "range_not_satisfiable"


def test_client_resumes_a_partial_download(client: TestClient, study: dict[str, Any], tmp_path: Path) -> None:
    api = StsweepClient(http=client)
    info = study["infos"][1]
    full = client.get(f"/v1/studies/{study['id']}/best-checkpoint").content
    dest = tmp_path / "dl" / "best.tar"
    dest.parent.mkdir()
    part = dest.with_name("best.tar.part")
    etag_file = dest.with_name("best.tar.part.etag")

    part.write_bytes(full[:50_000])  # an interrupted earlier download
    etag_file.write_text(f'"{info.sha256}"')
    dl = api.download_best_checkpoint(study["id"], dest)
    assert dl.resumed_from == 50_000 and dl.trial_number == 1 and dl.sha256 == info.sha256
    assert dest.read_bytes() == full and not part.exists() and not etag_file.exists()

    part.write_bytes(b"\0" * 50_000)  # corrupt bytes on disk: caught by the checksum, part discarded
    etag_file.write_text(f'"{info.sha256}"')
    with pytest.raises(StsweepClientError) as err:
        api.download_best_checkpoint(study["id"], dest)
    assert err.value.code == "checksum_mismatch" and not part.exists()
    dl = api.download_best_checkpoint(study["id"], dest)
    assert dl.resumed_from == 0 and dest.read_bytes() == full

    part.write_bytes(full[:1000])  # a part of an older best checkpoint: If-Range sends the new one whole
    etag_file.write_text('"stale"')
    assert api.download_best_checkpoint(study["id"], dest).resumed_from == 0 and dest.read_bytes() == full

    part.write_bytes(full)  # complete but never renamed: the 416 restarts it once
    etag_file.write_text(f'"{info.sha256}"')
    assert api.download_best_checkpoint(study["id"], dest).sha256 == info.sha256

    per_trial = api.download_trial_checkpoint(study["id"], 0, tmp_path / "t0.tar")
    assert per_trial.sha256 == study["infos"][0].sha256
    assert api.checkpoint_info(study["id"]).size == info.size


def test_trial_checkpoints_and_their_404s(client: TestClient, ctx: Context, study: dict[str, Any]) -> None:
    sid = study["id"]
    r = client.get(f"/v1/studies/{sid}/trials/0/checkpoint")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == study["infos"][0].sha256
    assert r.headers["content-disposition"] == 'attachment; filename="ckpt-study-trial-0.tar"'
    r = client.get(f"/v1/studies/{sid}/trials/0/checkpoint", headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and len(r.content) == 5

    pruned = client.get(f"/v1/studies/{sid}/trials/2/checkpoint")
    assert pruned.status_code == 404 and "has no checkpoint" in pruned.json()["error"]["message"]
    assert client.head(f"/v1/studies/{sid}/trials/2/checkpoint").status_code == 404
    missing = client.get(f"/v1/studies/{sid}/trials/99/checkpoint")
    assert missing.status_code == 404 and "no trial 99" in missing.json()["error"]["message"]
    assert client.get("/v1/studies/st_0123456789abcdef/best-checkpoint").status_code == 404

    # A study without a complete trial has no best checkpoint; a running trial's is not served.
    other = client.post("/v1/studies", json=contract_study(name="empty", budget={"n_trials": 1,
                                                                                 "max_concurrent_trials": 1}))
    oid = other.json()["id"]
    r = client.get(f"/v1/studies/{oid}/best-checkpoint")
    assert r.status_code == 404 and "no complete trial" in r.json()["error"]["message"]
    assert queue.claim(ctx.sessions, None, 30) is not None
    r = client.get(f"/v1/studies/{oid}/trials/0/checkpoint")
    assert r.status_code == 404 and "running" in r.json()["error"]["message"]

    # Retention took trial 0's checkpoint away: the trial says why there is none.
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET checkpoint_key = NULL, checkpoint_sha256 = NULL, checkpoint_bytes = NULL "
                       "WHERE study_id = :sid AND number = 0"), {"sid": sid})
    r = client.get(f"/v1/studies/{sid}/trials/0/checkpoint")
    assert r.status_code == 404 and "keep_top_k" in r.json()["error"]["message"]


def test_pull_extracts_and_writes_the_model_card(client: TestClient, study: dict[str, Any],
                                                 tmp_path: Path) -> None:
    api = StsweepClient(http=client)
    out = api.pull(study["id"], tmp_path / "models" / "best")
    assert out == (tmp_path / "models" / "best").resolve()
    expected = tree(study["folders"][1])
    got = tree(out)
    readme = got.pop("README.md").decode()
    expected.pop("README.md")
    assert got == expected  # every file, byte for byte
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["best"]  # no tar or staging left

    assert readme.startswith("---\nlibrary_name: sentence-transformers\n")
    assert readme.count("\n---\n") == 1  # one front matter
    for needle in ("# ckpt-study: trial 1", "sentence-transformers/all-MiniLM-L6-v2", "the study's best trial",
                   "`stsb/train.jsonl`", "`stsb/dev.jsonl`", "learning_rate", "4e-05", "CoSENTLoss",
                   "| spearman_cosine (objective) | 0.8500 | 0.7000 |", "pearson_cosine",
                   "**Test split** (spearman_cosine", "0.8123", EXISTING_CARD_HEADING, "Saved by ST."):
        assert needle in readme, needle

    with pytest.raises(FileExistsError):
        api.pull(study["id"], out)
    trial0 = api.pull(study["id"], tmp_path / "t0", trial_number=0)
    assert "Test split: not evaluated for this trial." in (trial0 / "README.md").read_text()


def test_pull_refuses_a_crafted_archive(client: TestClient, ctx: Context, study: dict[str, Any],
                                        tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"owned"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    crafted = tmp_path / "crafted.tar"
    crafted.write_bytes(buf.getvalue())
    info = ctx.artifacts.put_file(f"studies/{study['id']}/trials/0/final.tar", crafted)
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET checkpoint_sha256 = :sha, checkpoint_bytes = :n "
                       "WHERE study_id = :sid AND number = 0"), {"sha": info.sha256, "n": info.size,
                                                                  "sid": study["id"]})
    api = StsweepClient(http=client)
    work = tmp_path / "pulls"
    with pytest.raises(UnsafeArchive):
        api.pull(study["id"], work / "evil", trial_number=0)
    assert not (work / "evil").exists() and not (work / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list(work.iterdir()) == []  # nothing extracted, the hostile tar not kept
