"""The HTTP contract of issue 2: auth, 404s, 422s that name the field, idempotent POST, study and trial shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store import queue
from service.context import Context
from tests.studyspecs import contract_study


@pytest.fixture(autouse=True)
def stsb_files(data_root: Path) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')


def _post(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/studies", json=body, headers=headers)


def test_health_needs_no_token_and_everything_else_does(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    assert anonymous.get("/readyz").status_code == 200
    for method, path in [("get", "/v1/studies"), ("post", "/v1/studies"), ("get", "/v1/studies/st_0000000000000000"),
                         ("get", "/v1/studies/st_0000000000000000/trials"),
                         ("post", "/v1/studies/st_0000000000000000/stop"),
                         ("delete", "/v1/studies/st_0000000000000000")]:
        r = getattr(anonymous, method)(path)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    r = anonymous.get("/v1/studies", headers={"Authorization": "Bearer sts_not-a-real-token"})
    assert r.status_code == 401


def test_create_and_read_study_contract(client: TestClient) -> None:
    r = _post(client, contract_study())
    assert r.status_code == 201, r.text
    study = r.json()
    assert r.headers["location"] == f"/v1/studies/{study['id']}"
    for key in ("id", "name", "status", "created_at", "counts", "best", "baseline", "progress"):
        assert key in study
    assert study["status"] == "queued"
    assert study["counts"] == {"queued": 20, "running": 0, "complete": 0, "pruned": 0, "failed": 0}
    assert study["best"] is None and study["baseline"] is None
    assert study["progress"]["n_trials"] == 20 and study["progress"]["trials_finished"] == 0
    assert study["spec"]["search_space"]["learning_rate"]["log"] is True

    again = client.get(f"/v1/studies/{study['id']}").json()
    assert again["id"] == study["id"] and again["name"] == "minilm-stsb"

    listed = client.get("/v1/studies", params={"limit": 10}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == study["id"]
    assert client.get("/v1/studies", params={"status": "paused"}).json()["total"] == 0

    trials = client.get(f"/v1/studies/{study['id']}/trials", params={"limit": 5, "offset": 5}).json()
    assert trials["total"] == 20 and [t["number"] for t in trials["items"]] == [5, 6, 7, 8, 9]
    trial = trials["items"][0]
    for key in ("number", "state", "params", "value", "attempts", "failure_reason", "intermediate"):
        assert key in trial
    assert client.get(f"/v1/studies/{study['id']}/trials/3").json()["number"] == 3


def test_trial_shows_intermediate_values_on_the_examples_axis(client: TestClient, ctx: Context) -> None:
    study_id = _post(client, contract_study()).json()["id"]
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 1e-5}, 0)
    queue.report(ctx.sessions, claim.lease, 256, 0.5)
    queue.report(ctx.sessions, claim.lease, 512, 0.6)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="complete", value=0.7), 3)
    trial = client.get(f"/v1/studies/{study_id}/trials/0").json()
    assert trial["state"] == "complete" and trial["value"] == 0.7 and trial["attempts"] == 1
    assert trial["intermediate"] == [{"examples_seen": 256, "value": 0.5}, {"examples_seen": 512, "value": 0.6}]
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "running"
    assert study["best"] == {"trial_number": 0, "value": 0.7, "params": {"learning_rate": 1e-5}}
    assert client.get(f"/v1/studies/{study_id}/trials", params={"state": "complete"}).json()["total"] == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"search_space": {"learning_rate": {"distribution": "float", "low": 0, "high": 1e-3, "log": True}}},
         "search_space.learning_rate"),
        ({"search_space": {"learning_rate": {"distribution": "float", "low": 1e-3, "high": 1e-4}}},
         "search_space.learning_rate"),
        ({"search_space": {"per_device_train_batch_size": 0}}, "search_space.per_device_train_batch_size"),
        ({"search_space": {"loss": "TripletLoss"}}, "search_space.loss"),
        ({"search_space": {"warmup_ratio": 1.5}}, "search_space.warmup_ratio"),
        ({"search_space": {"lr_scheduler_type": "sawtooth"}}, "search_space.lr_scheduler_type"),
        ({"search_space": {"loss_params": {"CoSENTLoss": {"margin": 1}}}}, "search_space.loss_params.CoSENTLoss"),
        ({"search_space": {"bogus_param": 1}}, "search_space.bogus_param"),
        ({"task": "regression"}, "task"),
        ({"objective": {"metric": "accuracy"}}, "objective.metric"),
        ({"budget": {"n_trials": 0}}, "budget.n_trials"),
        ({"sampler": {"name": "annealing"}}, "sampler.name"),
        ({"evaluation": {"every_n_examples": 10, "every_n_steps": 2}}, "evaluation"),
        ({"data": {"train": {"path": "../etc/passwd.csv"}, "eval": {"path": "stsb/dev.jsonl"}}}, "data.train.path"),
        ({"data": {"train": {"path": "stsb/missing.jsonl"}, "eval": {"path": "stsb/dev.jsonl"}}}, "data.train.path"),
        ({"data": {"train": {"dataset_id": "ds_0123456789abcdef"}, "eval": {"path": "stsb/dev.jsonl"}}},
         "data.train.dataset_id"),
        ({"sampler": {"name": "grid"}}, "search_space.learning_rate"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, patch: dict[str, Any], field: str) -> None:
    r = _post(client, contract_study(**patch))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field, error
    assert error["message"].startswith(field)
    assert client.get("/v1/studies").json()["total"] == 0


def test_malformed_json_is_a_422_not_a_500(client: TestClient) -> None:
    r = client.post("/v1/studies", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "error" in r.json()


def test_idempotent_post(client: TestClient) -> None:
    first = _post(client, contract_study(), **{"Idempotency-Key": "k-1"})
    second = _post(client, contract_study(), **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert client.get("/v1/studies").json()["total"] == 1
    clash = _post(client, contract_study(name="other"), **{"Idempotency-Key": "k-1"})
    assert clash.status_code == 409 and clash.json()["error"]["field"] == "Idempotency-Key"
    assert _post(client, contract_study(), **{"Idempotency-Key": "k-2"}).status_code == 201


@pytest.mark.parametrize("bad_id", ["st_nope", "..", "%2e%2e", "st_0000000000000000", "%2Fetc%2Fpasswd"])
def test_unknown_ids_are_404(client: TestClient, bad_id: str) -> None:
    for path in (f"/v1/studies/{bad_id}", f"/v1/studies/{bad_id}/trials", f"/v1/studies/{bad_id}/trials/0"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    assert client.post(f"/v1/studies/{bad_id}/pause").status_code == 404


def test_unknown_trial_number_is_404(client: TestClient) -> None:
    study_id = _post(client, contract_study()).json()["id"]
    r = client.get(f"/v1/studies/{study_id}/trials/999")
    assert r.status_code == 404 and r.json()["error"]["field"] == "number"


def test_pause_resume_stop_delete(client: TestClient, ctx: Context) -> None:
    study_id = _post(client, contract_study()).json()["id"]
    assert client.post(f"/v1/studies/{study_id}/pause").json()["status"] == "paused"
    assert queue.claim(ctx.sessions, None, 30) is None  # paused studies hand out nothing
    assert client.post(f"/v1/studies/{study_id}/resume").json()["status"] == "queued"
    assert queue.claim(ctx.sessions, None, 30) is not None
    assert client.post(f"/v1/studies/{study_id}/stop").json()["status"] == "stopped"
    assert queue.claim(ctx.sessions, None, 30) is None
    r = client.post(f"/v1/studies/{study_id}/pause")
    assert r.status_code == 409 and "stopped" in r.json()["error"]["message"]
    assert client.delete(f"/v1/studies/{study_id}").status_code == 204
    assert client.get(f"/v1/studies/{study_id}").status_code == 404


def test_database_down_is_503_not_500(ctx: Context, token: str) -> None:
    from service.api.app import create_app
    from service.context import Context as Ctx

    dead = Ctx(ctx.settings, "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    try:
        with TestClient(create_app(dead, run_reaper=False), raise_server_exceptions=False) as c:
            r = c.get("/v1/studies", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200
    finally:
        dead.close()


def test_openapi_is_served(client: TestClient) -> None:
    assert "/v1/studies" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
