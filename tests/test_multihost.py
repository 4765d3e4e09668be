"""Two hosts that share only PostgreSQL and an S3 bucket: "host A" and "host B" are two real worker processes
with their own STSWEEP_HOME, scratch (TMPDIR), HOME and Hugging Face / torch caches, and no data path (data sets
reach them only through S3, uploaded over the API). Artifacts live on moto's S3 server on loopback. Host A is
killed (SIGKILL) once trial 0 has a resumable checkpoint; host B, started afterwards, resumes that trial from the
checkpoint in S3 and finishes the study; the best checkpoint is then pulled through the API, its sha256 matches
the header, the database and the object in the bucket, and SentenceTransformer loads it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.app import create_app
from service.client.http import StsweepClient
from service.context import Context
from service.settings import Settings
from service.store import checkpoints, queue
from service.store.db import session_scope
from service.store.tokens import create_token
from tests.conftest import ROOT
from tests.pairs import pair_rows, write_jsonl
from tests.workerproc import wait_for, worker_env

pytestmark = pytest.mark.slow

KEYS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}
PREFIX = "team/stsweep"
EVERY = 32
TRAIN = 128  # four evaluation points per trial: a checkpoint at the first leaves three to train after the kill
LEASE = 6.0
# Files that would mean a host kept a checkpoint (or a model) in its own home instead of the bucket.
CHECKPOINT_SUFFIXES = (".tar", ".safetensors", ".bin", ".pt", ".pth")


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any  # boto3's S3 client

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def s3() -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: a free one
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"multihost-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    try:
        yield S3(endpoint, bucket, client)
    finally:
        server.stop()


def s3_settings(database_url: str, home: Path, s3: S3, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url, home=home, artifact_root=f"s3://{s3.bucket}/{PREFIX}", data_root=None,
        s3_endpoint_url=s3.endpoint, lease_seconds=LEASE, heartbeat_seconds=1, poll_seconds=0.2, reaper_seconds=1,
        checkpoint_every_seconds=0, **KEYS)
    values.update(overrides)
    return Settings(**values, _env_file=None)  # type: ignore[call-arg]


@dataclass
class Host:
    """One machine's private folders. Nothing here is shared with the other host or the API."""

    name: str
    root: Path

    @property
    def home(self) -> Path:
        return self.root / "stsweep-home"

    @property
    def scratch(self) -> Path:
        return self.root / "tmp"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    def start(self, database_url: str, s3: S3, *args: str, **overrides: Any) -> subprocess.Popen[bytes]:
        for folder in (self.home, self.scratch, self.root / "user", self.root / "cache"):
            folder.mkdir(parents=True, exist_ok=True)
        env = worker_env(s3_settings(database_url, self.home, s3, **overrides))
        env.update({"HOME": str(self.root / "user"), "TMPDIR": str(self.scratch),
                    "XDG_CACHE_HOME": str(self.root / "cache"), "HF_HOME": str(self.root / "cache" / "hf"),
                    "TORCH_HOME": str(self.root / "cache" / "torch"),
                    "SENTENCE_TRANSFORMERS_HOME": str(self.root / "cache" / "st")})
        with self.log.open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "workers", "--device", "cpu", *args], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + (self.log.read_text()[-3000:] if self.log.exists() else "(no log)")


def upload(client: TestClient, path: Path) -> str:
    with path.open("rb") as f:
        r = client.post("/v1/datasets", files={"file": (path.name, f, "application/octet-stream")},
                        data={"task": "scored_pairs", "score_range": "0,5"})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


def one(ctx: Context, sql: str, **params: Any) -> Any:
    with session_scope(ctx.sessions) as s:
        return s.execute(text(sql), params).first()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_trial_killed_on_host_a_resumes_on_host_b_from_s3(database_url: str, s3: S3, tmp_path: Path) -> None:
    api_ctx = Context(s3_settings(database_url, tmp_path / "api-home", s3), database_url)
    token = create_token(api_ctx.sessions, "multihost")
    host_a, host_b = Host("host A", tmp_path / "host-a"), Host("host B", tmp_path / "host-b")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with TestClient(create_app(api_ctx, run_reaper=False), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            train = upload(client, write_jsonl(tmp_path / "train.jsonl", pair_rows("train", TRAIN, seed=21)))
            dev = upload(client, write_jsonl(tmp_path / "dev.jsonl", pair_rows("dev", 48, seed=22)))
            assert [k for k in s3.keys() if not k.startswith(f"{PREFIX}/")] == [], "everything under the prefix"
            assert len(s3.keys()) >= 2, "the uploaded data sets live in the bucket"
            body: dict[str, Any] = {
                "name": "multihost", "task": "scored_pairs",
                "data": {"train": {"dataset_id": train}, "eval": {"dataset_id": dev}, "score_range": [0, 5]},
                "search_space": {"learning_rate": {"distribution": "float", "low": 2e-5, "high": 6e-5, "log": True},
                                 "per_device_train_batch_size": 16, "max_seq_length": 32, "warmup_ratio": 0.0},
                "sampler": {"name": "tpe", "seed": 0},
                "pruner": {"name": "none"},
                "evaluation": {"every_n_examples": EVERY, "max_eval_samples": 24},
                "budget": {"n_trials": 2, "max_concurrent_trials": 1},
                "max_attempts": 3,
            }
            r = client.post("/v1/studies", json=body)
            assert r.status_code == 201, r.text
            study_id = r.json()["id"]

            # Host A alone: trains trial 0 until a resumable checkpoint of it is recorded, then dies.
            proc_a = host_a.start(database_url, s3)
            procs.append(proc_a)
            sql = """SELECT t.id, t.resume_key, t.resume_examples FROM trials t JOIN workers w ON w.id = t.worker_id
                     WHERE t.study_id = :s AND t.number = 0 AND t.state = 'running' AND w.pid = :pid
                       AND t.resume_examples IS NOT NULL"""
            wait_for(lambda: proc_a.poll() is not None or one(api_ctx, sql, s=study_id, pid=proc_a.pid), 150,
                     "host A's first resumable checkpoint of trial 0")
            assert proc_a.poll() is None, host_a.tail()
            os.kill(proc_a.pid, signal.SIGKILL)
            proc_a.wait()
            killed = one(api_ctx, "SELECT id, resume_key, resume_sha256, resume_examples FROM trials "
                                  "WHERE study_id = :s AND number = 0", s=study_id)
            assert killed.resume_examples < TRAIN, "killed before trial 0 finished"
            assert api_ctx.artifacts.exists(killed.resume_key), "the resumable checkpoint is in the bucket"
            points_at_kill = {p["examples_seen"] for p in client.get(
                f"/v1/studies/{study_id}/trials/0").json()["intermediate"]}
            worker_a = one(api_ctx, "SELECT id FROM workers WHERE pid = :p", p=proc_a.pid).id

            # Host B, started only now: reaps host A's expired lease, resumes trial 0 from S3, runs trial 1.
            # Its own resumable checkpoints are not what is tested (each is ~360 MB into moto: minutes on two
            # cores), so it writes none; it still uploads its final checkpoints.
            proc_b = host_b.start(database_url, s3, "--exit-when-idle", "2", checkpoint_every_seconds=3600)
            procs.append(proc_b)
            assert proc_b.wait(timeout=240) == 0, host_a.tail() + host_b.tail()
            worker_b = one(api_ctx, "SELECT id FROM workers WHERE pid = :p", p=proc_b.pid).id

            study = client.get(f"/v1/studies/{study_id}").json()
            assert study["status"] == "completed", study
            assert study["counts"]["complete"] == 2, study["counts"]
            trial0 = client.get(f"/v1/studies/{study_id}/trials/0").json()
            assert trial0["state"] == "complete" and trial0["attempts"] == 2, trial0
            points = [p["examples_seen"] for p in trial0["intermediate"]]
            assert points == [EVERY * k for k in range(1, TRAIN // EVERY + 1)], "every point once, none missing"
            after_resume = sorted(set(points) - points_at_kill)
            assert after_resume and after_resume[0] > killed.resume_examples, (points_at_kill, killed, points)
            ended = [(h["attempt"], h["worker_id"], h["event"]) for h in queue.history(api_ctx.sessions, killed.id)]
            assert ended == [(1, worker_a, "lease expired"), (2, worker_b, "complete")], ended
            log_a, log_b = host_a.log.read_text(), host_b.log.read_text()
            assert f"#0: resuming from checkpoint at {killed.resume_examples} examples" in log_b, log_b[-3000:]
            assert "resuming from checkpoint" not in log_a and "#1" not in log_a, "host A never got further"
            assert "starting over" not in log_b
            assert not api_ctx.artifacts.exists(killed.resume_key), "the dead attempt's checkpoint was cleaned up"

            # The best checkpoint, pulled from S3 through the API: one sha256 in the header, the database, the
            # bytes served and the object in the bucket.
            best = checkpoints.best_checkpoint(api_ctx.sessions, study_id)
            response = client.get(f"/v1/studies/{study_id}/best-checkpoint")
            assert response.status_code == 200, response.text
            served = hashlib.sha256(response.content).hexdigest()
            assert served == response.headers["x-checksum-sha256"] == best.sha256
            in_bucket = s3.client.get_object(Bucket=s3.bucket, Key=f"{PREFIX}/{best.key}")["Body"].read()
            assert hashlib.sha256(in_bucket).hexdigest() == best.sha256
            pulled = StsweepClient(http=client).pull(study_id, tmp_path / "pulled")
    finally:
        for proc in procs:
            stop(proc)
        api_ctx.close()

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(pulled), device="cpu")
    assert model.encode(["a cat sits on the mat", "a dog runs"]).shape == (2, 384)

    # The hosts kept nothing of the artifact store at home: every checkpoint went to (and came from) the bucket.
    # What their homes do hold is their own download cache of the data sets, fetched from S3.
    keys = s3.keys()
    assert keys and all(k.startswith(f"{PREFIX}/") for k in keys), keys
    for host in (host_a, host_b):
        home_files = [p for p in host.home.rglob("*") if p.is_file()]
        assert [p for p in home_files if p.name.endswith(CHECKPOINT_SUFFIXES)] == [], (host.name, home_files)
        assert not (host.home / "artifacts").exists(), host.name
        assert len([p for p in home_files if "datasets" in p.parts]) == 2, (host.name, home_files)
        local = {str(p.relative_to(tmp_path)) for p in host.root.rglob("*")}
        assert not any(k in local or k.removeprefix(f"{PREFIX}/") in local for k in keys), host.name
