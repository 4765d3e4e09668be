"""Data sets in, best checkpoint out, end to end: uploaded demo pairs, a real worker process, pruned trials,
retention, the best checkpoint pulled with the CLI and over HTTP, and a model that reproduces its score. The
study trains in bf16 (autocast on the CPU): each trial records it, the card says it, and the pulled model is
float32 all the same."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.pairs import pair_rows, write_jsonl
from tests.workerproc import run_until_idle

pytestmark = pytest.mark.slow


def upload(client: TestClient, path: Path) -> str:
    with path.open("rb") as f:
        r = client.post("/v1/datasets", files={"file": (path.name, f, "application/octet-stream")},
                        data={"task": "scored_pairs", "score_range": "0,5"})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def test_uploaded_data_to_pulled_model(client: TestClient, live_server: str, token: str, settings: Settings,
                                       tmp_path: Path) -> None:
    train = upload(client, write_jsonl(tmp_path / "train.jsonl", pair_rows("train", 160, seed=11)))
    dev = upload(client, write_jsonl(tmp_path / "dev.jsonl", pair_rows("dev", 80, seed=12)))
    assert upload(client, tmp_path / "dev.jsonl") == dev, "same bytes, same dataset"
    body: dict[str, Any] = {
        "name": "checkpoint-e2e", "task": "scored_pairs",
        "data": {"train": {"dataset_id": train}, "eval": {"dataset_id": dev}, "score_range": [0, 5]},
        "search_space": {"learning_rate": {"distribution": "categorical", "choices": [2e-5, 4e-5, 1.0]},
                         "per_device_train_batch_size": 16, "max_seq_length": 48, "warmup_ratio": 0.0},
        "enqueue_trials": [{"learning_rate": 2e-5}, {"learning_rate": 4e-5}, {"learning_rate": 1.0}],
        "pruner": {"name": "median", "n_startup_trials": 1},
        "evaluation": {"every_n_examples": 48, "max_eval_samples": 40},
        "budget": {"n_trials": 3, "max_concurrent_trials": 1},
        "keep_top_k": 1,
        "precision": "bf16",
    }
    r = client.post("/v1/studies", json=body)
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    run_until_idle(settings, tmp_path / "worker.log", 480)

    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "completed" and study["counts"]["pruned"] == 1 and study["counts"]["complete"] == 2
    trials = {t["number"]: t for t in client.get(f"/v1/studies/{study_id}/trials").json()["items"]}
    best = trials[study["best"]["trial_number"]]
    assert {t["precision"] for t in trials.values()} == {"bf16"}  # pruned or complete: what each trained in

    # Retention: only the top-1 final checkpoint is left; pruned trials and resume checkpoints left nothing.
    stored = sorted(p.relative_to(settings.artifact_root).as_posix()  # type: ignore[arg-type]
                    for p in Path(settings.artifact_root).rglob("*.tar"))  # type: ignore[arg-type]
    # Keys are per attempt (lease): studies/<id>/trials/<n>/<lease hex>/final.tar.
    assert len(stored) == 1 and re.fullmatch(rf"studies/{study_id}/trials/{best['number']}/[0-9a-f]{{32}}/final\.tar",
                                             stored[0]), stored
    assert [t["has_checkpoint"] for t in trials.values()].count(True) == 1
    assert study["checkpoint_bytes"] == os.path.getsize(Path(settings.artifact_root) / stored[0])  # type: ignore[arg-type]

    # Over HTTP: the sha256 header matches the bytes.
    with httpx.Client(base_url=live_server, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        response = http.get(f"/v1/studies/{study_id}/best-checkpoint")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == response.headers["x-checksum-sha256"]
    assert int(response.headers["content-length"]) == len(response.content)

    # With the CLI: a folder that SentenceTransformer loads, with a model card.
    out = tmp_path / "best"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")},
           "STSWEEP_URL": live_server, "STSWEEP_TOKEN": token, "HOME": str(tmp_path)}
    cli = subprocess.run([str(Path(sys.executable).with_name("stsweep")), "pull", study_id, "-o", str(out)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    card = (out / "README.md").read_text()
    assert "checkpoint-e2e" in card and "learning_rate" in card and "Trained in `bf16`" in card

    # A bf16 trial's model is a float32 model, as any other.
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert weights and {t.dtype for t in weights.values()} == {torch.float32}

    # Its embeddings reproduce the trial's reported eval score (a trial evaluates in float32 whatever it trains in).
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    rows = pair_rows("dev", 80, seed=12)
    evaluator = EmbeddingSimilarityEvaluator([r["sentence1"] for r in rows], [r["sentence2"] for r in rows],
                                             [r["score"] / 5 for r in rows], name="check")
    model = SentenceTransformer(str(out), device="cpu")
    score = evaluator(model)["check_spearman_cosine"]
    assert score == pytest.approx(best["value"], abs=1e-4)
