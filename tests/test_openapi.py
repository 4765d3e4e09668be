"""The OpenAPI lists every status each operation can answer, each error with the shared error schema, and real
answers (401, 403, 404, 405, 409, 413, 416, 422, 400, 503, idempotent 200) are what the document says."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response

from service.api.app import create_app
from service.api.deps import required_role
from service.api.openapi import ROUTE_STATUSES, with_every_status
from service.context import Context
from service.core.schemas import ErrorBody
from service.store import queue
from service.store.db import session_scope
from service.store.tokens import create_token
from sqlalchemy import text
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study

ERROR_REF = "#/components/schemas/ErrorBody"
PUBLIC = {"/healthz", "/readyz"}

# The statuses only some routes answer, written out here independently of service/api/openapi.py.
SPECIFIC: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/studies"): {200, 201, 400, 404, 409},
    ("POST", "/v1/studies/{study_id}/pause"): {409},
    ("POST", "/v1/studies/{study_id}/resume"): {409},
    ("POST", "/v1/studies/{study_id}/stop"): {409},
    ("POST", "/v1/studies/{study_id}/extend"): {400, 409},
    ("POST", "/v1/datasets"): {200, 201, 404, 409},
    ("POST", "/v1/tokens"): {404},
    ("DELETE", "/v1/tokens/{token_id}"): {409},
    ("POST", "/v1/projects"): {409},
    ("DELETE", "/v1/datasets/{dataset_id}"): {409},
    ("GET", "/v1/studies/{study_id}/best-checkpoint"): {206, 416},
    ("HEAD", "/v1/studies/{study_id}/best-checkpoint"): {206, 416},
    ("GET", "/v1/studies/{study_id}/trials/{number}/checkpoint"): {206, 416},
    ("HEAD", "/v1/studies/{study_id}/trials/{number}/checkpoint"): {206, 416},
    ("GET", "/readyz"): {503},
}


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    anonymous = TestClient(client.app)  # the document is public unless STSWEEP_DOCS_NEED_TOKEN
    r = anonymous.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in doc["paths"].items() for m, op in item.items()
            if m in ("get", "post", "put", "delete", "patch", "head")]


def roles_of(app: Any) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> the role each route states, read from its dependencies (service/api/deps.py)."""
    return {(m, route.path): required_role(route.dependencies) for route in iter_route_contexts(app.router.routes)
            if getattr(route, "dependencies", None) for m in route.methods or ()}


def expected_statuses(method: str, path: str, roles: dict[tuple[str, str], str] | None = None) -> set[int]:
    # 422: the guard refuses a too-deep JSON body on any path; 400 / 414 / 431: request parts past their bounds
    # (request_bounds.py); 408: a stalled body.
    statuses = {400, 405, 408, 413, 414, 422, 431, 500}
    if path.startswith("/v1/"):
        statuses |= {401, 503}
    if "{" in path:
        statuses.add(404)
    if (roles or {}).get((method, path)) in ("member", "admin"):
        statuses.add(403)  # a token below the route's role
    return statuses | SPECIFIC.get((method, path), set())


def test_every_operation_lists_every_status_with_the_error_schema(doc: dict[str, Any], client: TestClient) -> None:
    ops = operations(doc)
    roles = roles_of(client.app)
    assert len(ops) >= 27 and set(SPECIFIC) <= {(m, p) for m, p, _ in ops}
    for method, path, op in ops:
        responses = op["responses"]
        errors = {int(s) for s in responses if int(s) >= 400}
        expected = expected_statuses(method, path, roles)
        assert expected <= {int(s) for s in responses}, (method, path, sorted(responses))
        assert errors == {s for s in expected if s >= 400}, (method, path, sorted(errors))
        assert op.get("x-role") == roles.get((method, path)), (method, path)
        if 403 in errors:
            assert roles[(method, path)] in op["responses"]["403"]["description"]
        for status in errors:
            content = responses[str(status)]["content"]
            assert content == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (method, path, status)
            assert responses[str(status)]["description"]
        assert responses["405"]["headers"]["Allow"]["required"] is True
        if path.startswith("/v1/"):
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        else:
            assert "security" not in op, (method, path)
    text = json.dumps(doc)
    assert "HTTPValidationError" not in text  # FastAPI's own 422 shape is not what the server sends
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_success_statuses_added_per_route_carry_the_success_body(doc: dict[str, Any]) -> None:
    create = doc["paths"]["/v1/studies"]["post"]["responses"]
    assert create["200"]["content"] == create["201"]["content"]
    assert create["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/StudyPublic")
    upload = doc["paths"]["/v1/datasets"]["post"]["responses"]
    assert upload["200"]["content"] == upload["201"]["content"]
    download = doc["paths"]["/v1/studies/{study_id}/best-checkpoint"]["get"]["responses"]
    assert download["206"]["content"] == download["200"]["content"] == {"application/x-tar": {}}


def test_a_table_entry_for_a_route_the_app_lacks_is_an_error() -> None:
    """A route renamed without its ROUTE_STATUSES entry fails loudly instead of losing its statuses."""
    lonely = {"openapi": "3.1.0", "info": {"title": "x", "version": "1"},
              "paths": {"/v1/studies": {"get": {"responses": {"200": {"description": "ok"}}}}}}
    with pytest.raises(ValueError, match="ROUTE_STATUSES names operations the app does not have"):
        with_every_status(lonely)
    assert ("POST", "/v1/studies") in ROUTE_STATUSES


# ------------------------------------------------------------------ real answers match the document


def template_for(doc: dict[str, Any], path: str) -> str:
    for template in doc["paths"]:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"no operation for {path}")


def check_documented(doc: dict[str, Any], method: str, path: str, r: Response, status: int) -> None:
    """`r` has `status`, the document lists that status for the operation, and an error body is an ErrorBody."""
    assert r.status_code == status, (method, path, r.status_code, r.text)
    template = template_for(doc, path.split("?")[0])
    item = doc["paths"][template]
    if status == 405:
        assert method.lower() not in item
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed == {m.upper() for m in item}, (allowed, list(item))
        documented = [op["responses"]["405"] for op in item.values()]
    else:
        documented = [item[method.lower()]["responses"][str(status)]]
    if status >= 400:
        ErrorBody.model_validate(r.json())  # extra keys are refused: the schema is exact
        for response in documented:
            for name, header in response.get("headers", {}).items():
                if header.get("required"):
                    assert name.lower() in r.headers, (path, status, name)


@pytest.fixture
def stsb(data_root: Path) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')


def test_error_answers_are_what_the_document_says(client: TestClient, doc: dict[str, Any], stsb: None,
                                                  ctx: Context, tmp_path: Path) -> None:
    anonymous = TestClient(client.app)
    check_documented(doc, "GET", "/v1/studies", anonymous.get("/v1/studies"), 401)
    check_documented(doc, "POST", "/v1/studies/st_0123456789abcdef/stop",
                     anonymous.post("/v1/studies/st_0123456789abcdef/stop"), 401)
    check_documented(doc, "GET", "/v1/studies/st_0123456789abcdef",
                     client.get("/v1/studies/st_0123456789abcdef"), 404)
    check_documented(doc, "GET", "/v1/studies/nope/trials/0", client.get("/v1/studies/nope/trials/0"), 404)
    check_documented(doc, "DELETE", "/v1/tokens/999999", client.delete("/v1/tokens/999999"), 404)
    check_documented(doc, "PUT", "/v1/studies", client.put("/v1/studies"), 405)
    check_documented(doc, "PATCH", "/v1/studies/st_0123456789abcdef",
                     client.patch("/v1/studies/st_0123456789abcdef"), 405)
    check_documented(doc, "GET", "/v1/studies", client.get("/v1/studies", params={"limit": 0}), 422)
    check_documented(doc, "POST", "/v1/studies", client.post("/v1/studies", json=contract_study(task="x")), 422)
    check_documented(doc, "POST", "/v1/studies",
                     client.post("/v1/studies", content=b'{"name": "\xff"}',
                                 headers={"Content-Type": "application/json"}), 400)
    limit = ctx.settings.max_json_body_bytes
    check_documented(doc, "POST", "/v1/studies",
                     client.post("/v1/studies", json=contract_study(description="x" * (limit + 1))), 413)
    check_documented(doc, "GET", "/v1/workers", client.request("GET", "/v1/workers", content=b"x" * (limit + 1)),
                     413)
    deep = b"[" * 10_000 + b"]" * 10_000  # refused by the guard on any path, before a route parses it
    for path in ("/v1/workers", "/healthz"):
        check_documented(doc, "GET", path, client.request("GET", path, content=deep,
                                                          headers={"Content-Type": "application/json"}), 422)

    # Idempotent replay 200, key reuse 409, state change 409.
    first = client.post("/v1/studies", json=contract_study(), headers={"Idempotency-Key": "k"})
    check_documented(doc, "POST", "/v1/studies", first, 201)
    check_documented(doc, "POST", "/v1/studies",
                     client.post("/v1/studies", json=contract_study(), headers={"Idempotency-Key": "k"}), 200)
    check_documented(doc, "POST", "/v1/studies",
                     client.post("/v1/studies", json=contract_study(name="b"), headers={"Idempotency-Key": "k"}),
                     409)
    study_id = first.json()["id"]
    check_documented(doc, "POST", f"/v1/studies/{study_id}/stop", client.post(f"/v1/studies/{study_id}/stop"), 200)
    check_documented(doc, "POST", f"/v1/studies/{study_id}/pause", client.post(f"/v1/studies/{study_id}/pause"),
                     409)
    extend = f"/v1/studies/{study_id}/extend"
    check_documented(doc, "POST", extend, client.post(extend, json={"n_trials": 1}), 200)
    check_documented(doc, "POST", extend, client.post(extend, json={"n_trials": 0}), 422)
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET status = 'failed' WHERE id = :s"), {"s": study_id})
    check_documented(doc, "POST", extend, client.post(extend, json={"n_trials": 1}), 409)

    # A data set in use: 409 on delete; the same bytes again: 200; over the upload limit: 413.
    data = write_jsonl(tmp_path / "d.jsonl", pair_rows("train", 30, seed=0)).read_bytes()
    params = {"task": "scored_pairs", "filename": "d.jsonl", "score_range": "0,5"}
    ds = client.post("/v1/datasets", params=params, content=data,
                     headers={"Content-Type": "application/octet-stream"})
    check_documented(doc, "POST", "/v1/datasets", ds, 201)
    check_documented(doc, "POST", "/v1/datasets", client.post(
        "/v1/datasets", params=params, content=data, headers={"Content-Type": "application/octet-stream"}), 200)
    body = contract_study(name="uses-ds", data={"train": {"dataset_id": ds.json()["id"]},
                                                "eval": {"dataset_id": ds.json()["id"]}, "score_range": [0, 5]})
    assert client.post("/v1/studies", json=body).status_code == 201
    check_documented(doc, "DELETE", f"/v1/datasets/{ds.json()['id']}",
                     client.delete(f"/v1/datasets/{ds.json()['id']}"), 409)
    old = ctx.settings.max_upload_bytes
    ctx.settings.max_upload_bytes = 1024
    try:
        check_documented(doc, "POST", "/v1/datasets", client.post(
            "/v1/datasets", params=params, content=data, headers={"Content-Type": "application/octet-stream"}), 413)
    finally:
        ctx.settings.max_upload_bytes = old


def test_role_and_project_answers_are_what_the_document_says(client: TestClient, doc: dict[str, Any],
                                                             ctx: Context) -> None:
    viewer = {"Authorization": f"Bearer {create_token(ctx.sessions, 'viewer', role='viewer')}"}
    check_documented(doc, "POST", "/v1/studies", client.post("/v1/studies", json=contract_study(), headers=viewer),
                     403)
    check_documented(doc, "POST", "/v1/tokens", client.post("/v1/tokens", json={"name": "x"}, headers=viewer), 403)
    check_documented(doc, "POST", "/v1/studies", client.post("/v1/studies", json=contract_study(project="nope")),
                     404)
    check_documented(doc, "POST", "/v1/tokens", client.post("/v1/tokens", json={"name": "x", "project": "nope"}),
                     404)
    check_documented(doc, "POST", "/v1/projects", client.post("/v1/projects", json={"name": "default"}), 409)
    mine = client.get("/v1/tokens/me").json()["id"]
    check_documented(doc, "DELETE", f"/v1/tokens/{mine}", client.delete(f"/v1/tokens/{mine}"), 409)


def test_range_answers_are_what_the_document_says(client: TestClient, doc: dict[str, Any], stsb: None,
                                                  ctx: Context, tmp_path: Path) -> None:
    study_id = client.post("/v1/studies", json=contract_study(budget={"n_trials": 1})).json()["id"]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None
    claim, _ = got
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 1e-5}, 0)
    info = ctx.artifacts.put_dir(f"studies/{study_id}/trials/0/final.tar", folder)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state="complete", value=0.5, checkpoint_key=info.key, checkpoint_sha256=info.sha256,
        checkpoint_bytes=info.size), pause_after_streak=3)
    path = f"/v1/studies/{study_id}/best-checkpoint"
    whole = client.get(path)
    check_documented(doc, "GET", path, whole, 200)
    assert tarfile.open(fileobj=io.BytesIO(whole.content)).getnames()
    check_documented(doc, "GET", path, client.get(path, headers={"Range": "bytes=0-9"}), 206)
    check_documented(doc, "HEAD", path, client.head(path, headers={"Range": "bytes=0-9"}), 206)
    check_documented(doc, "GET", path, client.get(path, headers={"Range": f"bytes={info.size}-"}), 416)
    trial = f"/v1/studies/{study_id}/trials/0/checkpoint"
    check_documented(doc, "GET", trial, client.get(trial, headers={"Range": f"bytes={info.size + 5}-"}), 416)


def test_database_down_is_a_documented_503(ctx: Context, token: str, doc: dict[str, Any]) -> None:
    dead = Context(ctx.settings, "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    try:
        with TestClient(create_app(dead, run_reaper=False), raise_server_exceptions=False) as c:
            for path in ("/v1/studies", "/v1/studies/st_0123456789abcdef/charts/history", "/v1/tokens"):
                check_documented(doc, "GET", path, c.get(path, headers={"Authorization": f"Bearer {token}"}), 503)
            check_documented(doc, "GET", "/readyz", c.get("/readyz"), 503)
    finally:
        dead.close()
