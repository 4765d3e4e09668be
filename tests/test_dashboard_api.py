"""The JSON behind the dashboard: live deltas since a cursor, chart data, workers, auth and bad ids.

Trials are made through the real queue (claim, set_params, report, progress, finish), never by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.store import dashboard_reads, lifecycle, queue, studies
from service.context import Context
from service.store.db import session_scope
from service.core.spec import StudySpec
from tests.studyspecs import contract_study

Points = list[tuple[int, float]]


@dataclass
class Seeded:
    study_id: str
    workers: dict[str, int]
    running: queue.Lease
    expected: dict[str, int] = field(default_factory=dict)


def params(i: int) -> dict[str, Any]:
    return {"learning_rate": 1e-6 * (1 + i % 90), "per_device_train_batch_size": (16, 32, 64)[i % 3],
            "num_train_epochs": 1 + i % 3, "warmup_ratio": 0.02 * i % 0.2,
            "loss": ("CoSENTLoss", "CosineSimilarityLoss")[i % 2], "weight_decay": 0.01}


def make_study(ctx: Context, n_trials: int = 12, name: str = "minilm-stsb", project: str = "default") -> str:
    spec = StudySpec.model_validate(contract_study(name=name, budget={"n_trials": n_trials,
                                                                      "max_concurrent_trials": 4}))
    study_id = studies.new_study_id()
    studies.insert_study(ctx.sessions, study_id, f"stsweep-{study_id}", spec, None, {}, project=project)
    return study_id


def start_trial(ctx: Context, worker: int | None, points: Points, i: int) -> tuple[queue.Lease, int]:
    got = queue.claim(ctx.sessions, worker, 60)
    assert got is not None
    claim, _ = got
    queue.set_params(ctx.sessions, claim.lease, params(claim.number + i), claim.number)
    for n, v in points:
        queue.report(ctx.sessions, claim.lease, n, v)
    queue.progress(ctx.sessions, claim.lease, points[-1][0] if points else 0, 1024, 30.0)
    return claim.lease, claim.number


def run_trial(ctx: Context, worker: int | None, state: str, points: Points, value: float | None = None,
              reason: str | None = None, i: int = 0) -> int:
    lease, number = start_trial(ctx, worker, points, i)
    queue.finish(ctx.sessions, lease, queue.Finish(state=state, value=value, failure_reason=reason), 3)
    return number


def curve(*values: float) -> Points:
    return [(256 * (k + 1), v) for k, v in enumerate(values)]


def seed(ctx: Context) -> Seeded:
    """A study of 12 slots: 3 complete, 1 pruned, 1 failed, 1 running (7 queued); two workers."""
    study_id = make_study(ctx)
    with session_scope(ctx.sessions) as s:  # as the first worker does (workers/loop.py) before any trial
        s.execute(text("UPDATE studies SET baseline_value = 0.82, baseline_subset_value = 0.79 WHERE id = :id"),
                  {"id": study_id})
    w1 = queue.register_worker(ctx.sessions, "gpu-box-1", 101, "cuda:0", bf16="cuda")
    w2 = queue.register_worker(ctx.sessions, "gpu-box-2", 202, "cuda:1", bf16="none")
    run_trial(ctx, w1, "complete", curve(0.70, 0.78, 0.80), 0.80)
    run_trial(ctx, w1, "complete", curve(0.72, 0.81, 0.85), 0.85)
    run_trial(ctx, w1, "pruned", curve(0.40, 0.45), 0.45)
    run_trial(ctx, w1, "failed", [], reason="CUDA out of memory")
    run_trial(ctx, w1, "complete", curve(0.71, 0.79, 0.83), 0.83)
    running, _ = start_trial(ctx, w2, curve(0.60), 0)
    return Seeded(study_id, {"w1": w1, "w2": w2}, running,
                  {"complete": 3, "pruned": 1, "failed": 1, "running": 1, "queued": 6, "with_points": 5})


def test_changes_return_only_what_changed(client: TestClient, ctx: Context) -> None:
    seeded = seed(ctx)
    sid = seeded.study_id
    first = client.get(f"/v1/studies/{sid}/changes", params={"cursor": 0}).json()
    assert first["since"] == 0 and first["more"] is False
    assert len(first["trials"]) == 12
    assert first["study"]["counts"] == {k: seeded.expected[k] for k in studies.TRIAL_STATES}
    by_number = {t["number"]: t for t in first["trials"]}
    assert [p["value"] for p in by_number[1]["intermediate"]] == [0.72, 0.81, 0.85]
    cursor = first["cursor"]

    idle = client.get(f"/v1/studies/{sid}/changes", params={"cursor": cursor}).json()
    assert idle == {"study_id": sid, "since": cursor, "cursor": cursor, "more": False, "trials": [],
                    "study": None}

    queue.report(ctx.sessions, seeded.running, 512, 0.66)
    delta = client.get(f"/v1/studies/{sid}/changes", params={"cursor": cursor}).json()
    assert [t["number"] for t in delta["trials"]] == [5]
    assert delta["trials"][0]["intermediate"] == [{"examples_seen": 512, "value": 0.66}]  # only the new point
    assert delta["cursor"] > cursor and delta["study"]["counts"]["running"] == 1

    queue.finish(ctx.sessions, seeded.running, queue.Finish(state="complete", value=0.9), 3)
    done = client.get(f"/v1/studies/{sid}/changes", params={"cursor": delta["cursor"]}).json()
    assert [(t["number"], t["state"], t["value"], t["intermediate"]) for t in done["trials"]] == \
        [(5, "complete", 0.9, [])]
    assert done["study"]["best"]["trial_number"] == 5 and done["study"]["counts"]["complete"] == 4

    lifecycle.change_status(ctx.sessions, sid, "pause")
    paused = client.get(f"/v1/studies/{sid}/changes", params={"cursor": done["cursor"]}).json()
    assert paused["trials"] == [] and paused["study"]["status"] == "paused"


def test_changes_page_through_a_backlog(client: TestClient, ctx: Context,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sid = seed(ctx).study_id
    monkeypatch.setattr(dashboard_reads, "CHANGES_LIMIT", 5)
    cursor, seen, pages = 0, [], 0
    while True:
        body = client.get(f"/v1/studies/{sid}/changes", params={"cursor": cursor}).json()
        seen += [t["number"] for t in body["trials"]]
        cursor, pages = body["cursor"], pages + 1
        if not body["more"]:
            break
        assert len(body["trials"]) == 5
    assert sorted(seen) == list(range(12)) and pages == 3


def test_history(client: TestClient, ctx: Context) -> None:
    sid = seed(ctx).study_id
    body = client.get(f"/v1/studies/{sid}/charts/history").json()
    assert body["trials"] == {"number": [0, 1, 4], "value": [0.80, 0.85, 0.83]}
    assert body["best"] == {"number": [0, 1], "value": [0.80, 0.85]}
    assert body["objective"] == {"metric": "spearman_cosine", "direction": "maximize"}
    assert body["baseline"] == 0.82
    assert body["total"] == body["shown"] == 3 and body["sampled"] is False and body["cursor"] > 0


def test_curves_mark_pruned_trials(client: TestClient, ctx: Context) -> None:
    sid = seed(ctx).study_id
    body = client.get(f"/v1/studies/{sid}/charts/curves").json()
    trials = {t["number"]: t for t in body["trials"]}
    assert sorted(trials) == [0, 1, 2, 4, 5]  # the failed trial reported nothing
    assert trials[2]["state"] == "pruned" and trials[2]["pruned_at"] == 512
    assert all(t["pruned_at"] is None for n, t in trials.items() if n != 2)
    assert trials[1]["x"] == [256, 512, 768] and trials[1]["y"] == [0.72, 0.81, 0.85]
    assert trials[5]["state"] == "running" and trials[5]["x"] == [256]
    assert body["baseline"] == 0.79  # intermediate values are on the eval subset
    assert body["total"] == 6 and body["shown"] == 5 and body["sampled"] is False  # 6 started, 5 with points


def test_parallel(client: TestClient, ctx: Context) -> None:
    sid = seed(ctx).study_id
    body = client.get(f"/v1/studies/{sid}/charts/parallel").json()
    names = [p["name"] for p in body["params"]]
    assert names == ["learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_ratio", "loss"]
    lr = body["params"][0]
    assert lr["type"] == "float" and lr["log"] is True
    assert body["params"][1] == {"name": "per_device_train_batch_size", "type": "categorical",
                                 "choices": [16, 32, 64]}
    assert body["trials"]["number"] == [0, 1, 4] and body["trials"]["value"] == [0.80, 0.85, 0.83]
    assert all(len(v) == 3 for v in body["trials"]["params"].values())
    assert body["total"] == body["shown"] == 3


def test_importance(client: TestClient, ctx: Context) -> None:
    sid = make_study(ctx)
    empty = client.get(f"/v1/studies/{sid}/charts/importance").json()
    assert empty["importances"] == {} and "at least 2 complete trials" in empty["reason"]
    for i in range(8):
        run_trial(ctx, None, "complete", curve(0.5), 0.5 + 0.04 * i + 0.001 * (i % 3), i=3 * i)
    body = client.get(f"/v1/studies/{sid}/charts/importance").json()
    assert body["reason"] is None and body["n_trials_used"] == 8 and body["n_complete"] == 8
    assert set(body["importances"]) == {"learning_rate", "per_device_train_batch_size", "num_train_epochs",
                                        "warmup_ratio", "loss"}
    assert abs(sum(body["importances"].values()) - 1.0) < 1e-3
    assert client.get(f"/v1/studies/{sid}/charts/importance").json() == body  # cached, same answer


def test_workers(client: TestClient, ctx: Context) -> None:
    seeded = seed(ctx)
    items = {w["host"]: w for w in client.get("/v1/workers").json()["items"]}
    assert items["gpu-box-1"]["trials_done"] == 5 and items["gpu-box-1"]["status"] == "idle"
    assert items["gpu-box-1"]["current_trial"] is None
    busy = items["gpu-box-2"]
    assert busy["status"] == "busy" and busy["device"] == "cuda:1" and busy["trials_done"] == 0
    assert items["gpu-box-1"]["bf16"] == "cuda" and busy["bf16"] == "none"  # the native bf16 unit, at start-up
    assert busy["current_trial"]["study_id"] == seeded.study_id and busy["current_trial"]["number"] == 5
    assert 0 <= busy["heartbeat_age_seconds"] < 30


def test_auth_and_bad_ids(client: TestClient, ctx: Context) -> None:
    sid = make_study(ctx)
    paths = [f"/v1/studies/{sid}/changes", f"/v1/studies/{sid}/charts/history", f"/v1/studies/{sid}/charts/curves",
             f"/v1/studies/{sid}/charts/parallel", f"/v1/studies/{sid}/charts/importance", "/v1/workers"]
    for path in paths:
        assert client.get(path).status_code == 200, path
        anonymous = client.get(path, headers={"Authorization": ""})
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized", path
    for bad in ("st_0000000000000000", "..%2F..%2Fetc", "nope"):
        for chart in ("changes", "charts/history", "charts/curves", "charts/parallel", "charts/importance"):
            r = client.get(f"/v1/studies/{bad}/{chart}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (bad, chart)
    assert client.get(f"/v1/studies/{sid}/changes", params={"cursor": -1}).status_code == 422


def test_page_and_assets_need_no_token(client: TestClient) -> None:
    anonymous = {"Authorization": ""}
    page = client.get("/", headers=anonymous)
    assert page.status_code == 200 and "/static/app.js" in page.text and "/static/plotly.min.js" in page.text
    for name, kind in (("app.js", "javascript"), ("charts.js", "javascript"), ("app.css", "css"),
                       ("plotly.min.js", "javascript")):
        r = client.get(f"/static/{name}", headers=anonymous)
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    assert len(client.get("/static/plotly.min.js").content) > 1_000_000
    assert client.get("/static/..%2Fapi%2Fapp.py").status_code == 404
    assert client.get("/static/index.html").status_code == 404
