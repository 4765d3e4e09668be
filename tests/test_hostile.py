"""Issue 18, item 11 (the server half): the hand-made hostile list (tests/hostile_requests.py) sent whole to one
live server (uvicorn, real PostgreSQL) over raw sockets: no answer is a 5xx, every answer is of a status class
the list allows, none hangs; then /healthz answers 200 and a normal study posted to the same server is completed
by a real worker process. (The schemathesis run is tests/test_fuzz.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile_requests import Hostile, hostile_requests
from tests.pairs import pair_rows, write_jsonl
from tests.rawhttp import Served, chunked, exchange, served, status_of
from tests.studyspecs import contract_study
from tests.test_worker_e2e import study_body
from tests.workerproc import run_until_idle

PER_REQUEST_SECONDS = 15


@pytest.fixture(scope="module")
def server(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "stsb").mkdir()
    for name, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        write_jsonl(folder / "stsb" / f"{name}.jsonl", pair_rows(split, 40, seed=1))
    with served(template_db, folder) as s:
        yield s


def _head(server: Served, h: Hostile, study_id: str) -> tuple[bytes, bytes]:
    path = h.path.replace("STUDY", study_id)
    lines = [f"{h.method} {path} HTTP/1.1".encode(), b"Host: x"]
    if h.auth:
        lines.append(server.auth().rstrip(b"\r\n"))
    lines += [name + b": " + value for name, value in h.headers]
    given = {name.lower() for name, _ in h.headers}
    body = h.body
    if h.chunked:
        lines.append(b"Transfer-Encoding: chunked")
        body = chunked(h.body)
    elif body and b"content-length" not in given and b"transfer-encoding" not in given:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n", body


@pytest.mark.slow  # ends with a real (tiny) training run
def test_the_hostile_list_gets_no_5xx_and_no_hang_then_a_study_completes(server: Served, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {server.token}"}
    created = httpx.post(f"{server.base}/v1/studies", json=contract_study(name="before"), headers=auth)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    wrong: list[str] = []
    started = time.monotonic()
    requests = hostile_requests()
    for h in requests:
        head, body = _head(server, h, study_id)
        t0 = time.monotonic()
        answer, _ = exchange(server, head, body, deadline=PER_REQUEST_SECONDS)
        status = status_of(answer)
        took = time.monotonic() - t0
        if status // 100 not in h.ok or took > PER_REQUEST_SECONDS - 1:
            wrong.append(f"{h.name}: {status or 'no answer'} in {took:.1f} s {answer[:300]!r}")
    print(f"HOSTILE requests={len(requests)} wrong={len(wrong)} seconds={time.monotonic() - started:.1f}")
    assert not wrong, "\n".join(wrong)
    assert httpx.get(f"{server.base}/healthz").status_code == 200
    listed = httpx.get(f"{server.base}/v1/studies", params={"limit": 500}, headers=auth)
    assert listed.status_code == 200, listed.text
    for study in listed.json()["items"]:  # what the list created: the worker below runs only the normal study
        stopped = httpx.post(f"{server.base}/v1/studies/{study['id']}/stop", headers=auth)
        assert stopped.status_code in (200, 409), stopped.text
    data = {"train": {"path": "stsb/train.jsonl"}, "eval": {"path": "stsb/dev.jsonl"}, "score_range": [0, 5],
            "max_train_samples": 16}
    body = study_body("after the list", data=data, evaluation={"every_n_examples": 16, "max_eval_samples": 8})
    r = httpx.post(f"{server.base}/v1/studies", json=body, headers=auth)
    assert r.status_code == 201, r.text
    run_until_idle(server.ctx.settings, tmp_path / "worker.log", 240)
    read = httpx.get(f"{server.base}/v1/studies/{r.json()['id']}", headers=auth)
    assert read.status_code == 200, read.text
    assert read.json()["status"] == "completed" and read.json()["counts"]["complete"] == 1, read.json()
