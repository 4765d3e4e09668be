"""Project quotas over HTTP, on real PostgreSQL: active studies and queued plus running trials are a 429 naming
the quota, stored bytes a 413 naming `max_stored_bytes`, each with the quota's value and the usage; nothing is
half-stored (no study row, no Optuna study, no object); concurrent submissions cannot both pass a quota of 1;
an unset quota is unlimited; a quota lowered below the usage stops new work only. The checkpoint side (a final
checkpoint the byte quota has no room for) is in tests/test_quota_checkpoints.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.context import Context
from service.store import queue
from service.store.db import session_scope
from service.store.tokens import create_token
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study

PROJECT = "team-a"


@pytest.fixture(autouse=True)
def stsb_files(data_root: Path) -> None:
    """The contract study's files, at the data root and in the project's own folder."""
    for folder in (data_root / "stsb", data_root / PROJECT / "stsb"):
        folder.mkdir(parents=True)
        for split in ("train", "dev", "test"):
            (folder / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')


@pytest.fixture
def member(client: TestClient, ctx: Context) -> Iterator[TestClient]:
    """A member of project team-a (made by the admin `client`, with no quota yet)."""
    r = client.post("/v1/projects", json={"name": PROJECT})
    assert r.status_code == 201, r.text
    secret = create_token(ctx.sessions, "member-a", project=PROJECT, role="member")
    with TestClient(client.app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c


def set_quota(client: TestClient, **quotas: int | None) -> dict[str, Any]:
    r = client.patch(f"/v1/projects/{PROJECT}", json=quotas)
    assert r.status_code == 200, r.text
    return dict(r.json())


def usage(client: TestClient) -> dict[str, int]:
    return dict(client.get(f"/v1/projects/{PROJECT}").json()["usage"])


def study(n_trials: int = 1, **overrides: Any) -> dict[str, Any]:
    return contract_study(budget={"n_trials": n_trials, "max_concurrent_trials": 1}, **overrides)


def submit(c: TestClient, n_trials: int = 1, **overrides: Any) -> httpx.Response:
    return c.post("/v1/studies", json=study(n_trials, **overrides))


def stored(ctx: Context, project: str = PROJECT) -> dict[str, int]:
    """What the project has in our tables and in Optuna's."""
    with session_scope(ctx.sessions) as s:
        studies, trials = s.execute(text(
            "SELECT count(DISTINCT st.id), count(t.id) FROM studies st LEFT JOIN trials t ON t.study_id = st.id "
            "WHERE st.project = :p"), {"p": project}).one()
        names = set(s.execute(text("SELECT optuna_study_name FROM studies")).scalars())
    optuna = {st.study_name for st in ctx.optuna_storage.get_all_studies()}
    assert optuna == names, "every Optuna study belongs to a stored study, and the other way round"
    return {"studies": int(studies), "trials": int(trials), "optuna": len(optuna)}


def refused(r: httpx.Response, status: int, quota: str, value: int, used: int) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == quota, error
    assert f"{quota}={value}" in error["message"] and f"used {used}" in error["message"], error["message"]


def test_active_studies_quota(client: TestClient, member: TestClient, ctx: Context) -> None:
    set_quota(client, max_active_studies=2)
    a, b = (submit(member).json()["id"] for _ in range(2))
    before = stored(ctx)
    refused(submit(member), 429, "max_active_studies", 2, 2)
    assert stored(ctx) == before, "a refused study leaves no row, no trial and no Optuna study"
    assert submit(client).status_code == 201, "another project's quota is its own"

    # Stopped studies are not active: one frees a place, and taking it back is checked like a new study.
    assert member.post(f"/v1/studies/{b}/stop").status_code == 200
    c = submit(member).json()["id"]
    refused(member.post(f"/v1/studies/{b}/resume"), 429, "max_active_studies", 2, 2)
    refused(member.post(f"/v1/studies/{b}/extend", json={"n_trials": 1}), 429, "max_active_studies", 2, 2)
    assert member.get(f"/v1/studies/{b}").json()["status"] == "stopped"
    assert member.get(f"/v1/studies/{b}").json()["progress"]["n_trials"] == 1, "a refused extend adds nothing"
    # A paused study still counts: resuming it adds nothing and passes; so does extending an active one.
    assert member.post(f"/v1/studies/{a}/pause").status_code == 200
    assert member.post(f"/v1/studies/{a}/resume").json()["status"] == "queued"
    assert member.post(f"/v1/studies/{c}/extend", json={"n_trials": 2}).status_code == 200

    set_quota(client, max_active_studies=None)  # unset: unlimited again
    assert member.post(f"/v1/studies/{b}/resume").status_code == 200
    assert all(submit(member).status_code == 201 for _ in range(3))
    assert usage(client)["active_studies"] == 6


def test_trials_quota_counts_the_budget_and_confirm_runs(client: TestClient, member: TestClient,
                                                          ctx: Context) -> None:
    set_quota(client, max_trials=5)
    first = submit(member, 3).json()["id"]
    before = stored(ctx)
    refused(submit(member, 3), 429, "max_trials", 5, 3)
    # Confirm runs count too: 1 search trial and 1 x 2 confirm runs do not fit the 2 trials left, 2 trials do.
    refused(submit(member, 1, confirm={"top_k": 1, "seeds": 2}), 429, "max_trials", 5, 3)
    assert stored(ctx) == before
    assert submit(member, 2).status_code == 201
    refused(member.post(f"/v1/studies/{first}/extend", json={"n_trials": 1}), 429, "max_trials", 5, 5)
    assert usage(client)["trials"] == 5

    # A stopped study's queued slots do not count until it runs again; resuming it is checked.
    assert member.post(f"/v1/studies/{first}/stop").status_code == 200
    assert usage(client)["trials"] == 2
    third = submit(member, 3).json()["id"]
    refused(member.post(f"/v1/studies/{first}/resume"), 429, "max_trials", 5, 5)
    assert member.post(f"/v1/studies/{first}/extend", json={"n_trials": 1}).status_code == 429
    assert member.delete(f"/v1/studies/{third}").status_code == 204
    assert member.post(f"/v1/studies/{first}/resume").status_code == 200
    assert usage(client)["trials"] == 5
    assert submit(client, 50).status_code == 201, "the default project has no quota"


def test_lowering_a_quota_below_the_usage_stops_new_work_only(client: TestClient, member: TestClient,
                                                              ctx: Context) -> None:
    ids = [submit(member, 2).json()["id"] for _ in range(2)]
    set_quota(client, max_active_studies=1, max_trials=1)
    now = usage(client)
    assert (now["active_studies"], now["trials"]) == (2, 4), "nothing is removed"
    refused(submit(member), 429, "max_active_studies", 1, 2)
    refused(member.post(f"/v1/studies/{ids[0]}/extend", json={"n_trials": 1}), 429, "max_trials", 1, 4)
    assert member.post(f"/v1/studies/{ids[0]}/pause").status_code == 200
    assert member.post(f"/v1/studies/{ids[0]}/resume").status_code == 200
    # The trials already queued still run: workers claim them as before.
    claimed = queue.claim(ctx.sessions, None, 30)
    assert claimed is not None and claimed[0].study_id in ids


def test_concurrent_submissions_cannot_both_pass_a_quota_of_one(client: TestClient, member: TestClient,
                                                                 live_server: str, ctx: Context) -> None:
    set_quota(client, max_active_studies=1)
    headers = dict(member.headers)
    n = 6
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def post(i: int) -> None:
        with httpx.Client(base_url=live_server, headers=headers, timeout=120) as http:
            barrier.wait()
            statuses.append(http.post("/v1/studies", json=study(1, name=f"race-{i}")).status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [429] * (n - 1), statuses
    assert stored(ctx) == {"studies": 1, "trials": 1, "optuna": 1}


def test_idempotent_repeat_is_not_new_work(client: TestClient, member: TestClient) -> None:
    set_quota(client, max_active_studies=1)
    first = member.post("/v1/studies", json=study(), headers={"Idempotency-Key": "k1"})
    again = member.post("/v1/studies", json=study(), headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    refused(member.post("/v1/studies", json=study(), headers={"Idempotency-Key": "k2"}), 429,
            "max_active_studies", 1, 1)


def upload(c: TestClient, path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return c.post("/v1/datasets", files={"file": (path.name, f, "application/octet-stream")},
                      data={"task": "scored_pairs", "score_range": "0,5"})


def test_stored_bytes_quota_on_uploads(client: TestClient, member: TestClient, ctx: Context,
                                       tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", pair_rows("train", 40, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", pair_rows("train", 40, seed=2))
    size_a = a.stat().st_size
    set_quota(client, max_stored_bytes=size_a + 10)
    first = upload(member, a)
    assert first.status_code == 201, first.text
    assert upload(member, a).status_code == 200, "the same bytes again store nothing and pass"
    refused(upload(member, b), 413, "max_stored_bytes", size_a + 10, size_a)
    assert ctx.artifacts.list_keys(f"datasets/{PROJECT}") == [f"datasets/{PROJECT}/{first.json()['sha256']}.jsonl"]
    assert len(member.get("/v1/datasets").json()["items"]) == 1, "no row for the refused upload"
    assert upload(client, b).status_code == 201, "the default project has no quota"
    assert usage(client)["stored_bytes"] == size_a

    # Lowered below the usage: what is stored stays, the same bytes still pass, new bytes do not.
    set_quota(client, max_stored_bytes=0)
    assert upload(member, a).status_code == 200
    refused(upload(member, b), 413, "max_stored_bytes", 0, size_a)
    assert member.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
    set_quota(client, max_stored_bytes=None)
    assert upload(member, b).status_code == 201
