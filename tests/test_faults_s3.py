"""The S3 server (moto, on loopback) stopped in the middle of a checkpoint upload and started again a few seconds
later: the worker retries, says so once each way, and no trial fails; the final checkpoint in S3 verifies."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import boto3
import pytest

from service.context import Context
from tests.faultkit import create_study, free_port, rows, settings_for, study_status, tiny_study, trials_of, \
    wait_for, write_pairs
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow

KEYS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


def test_s3_stopped_during_a_checkpoint_upload(database_url: str, tmp_path: Path) -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    settings = settings_for(database_url, tmp_path, artifact_root=f"s3://{bucket}/stsweep", s3_endpoint_url=endpoint,
                            lease_seconds=20, checkpoint_every_seconds=0, fault_retry_seconds=120, **KEYS)
    write_pairs(settings.data_root, train=128)  # type: ignore[arg-type]
    ctx = Context(settings, database_url)
    study_id = create_study(ctx, tiny_study("s3-outage", train=128, budget={"n_trials": 1, "max_concurrent_trials": 1}))
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, "--exit-when-idle", "3")
    try:
        # The second checkpoint's multipart upload under way (the first one went through): stop the server.
        wait_for(lambda: rows(ctx, "SELECT 1 FROM trials WHERE resume_key IS NOT NULL"), 300, "a first checkpoint")
        wait_for(lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), 120, "an upload in progress",
                 interval=0.05)
        server.stop()
        time.sleep(6)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        assert worker.wait(timeout=600) == 0, log.read_text()[-3000:]
        (trial,) = trials_of(ctx, study_id)
        assert trial.state == "complete" and trial.attempts == 1, (trial.state, trial.history)
        assert study_status(ctx, study_id) == "completed"
        text = log.read_text()
        assert text.count("artifact store unavailable (") == 1 and "S3 unreachable" in text, text[-3000:]
        assert text.count("artifact store back after ") == 1
        ctx.artifacts.get_dir(trial.checkpoint_key, tmp_path / "final", expected_sha256=trial.checkpoint_sha256)
        assert (tmp_path / "final" / "config.json").is_file()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        server.stop()
        ctx.close()
