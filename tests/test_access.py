"""Issue 20, roles and projects: every operation of the OpenAPI document (the HEAD checkpoint routes included),
called by each role and by a token of another project on objects of project `alpha`, answers what ONE table
(`expected`) says. Then what the table does not cover: lists, `GET /v1/tokens/me`, revoking one's own token,
the last admin token, creating in another project, per-project de-duplication and idempotency keys.

One app and one database for the module; the objects are few and made quickly (a data set upload, a study over
it, one trial finished with a small checkpoint through the queue, as a worker would).

The table: a token below the role a route states (its `dependencies`, read back with `required_role`) gets a 403
naming both roles, whatever the request names; otherwise what its project does not hold (another project's
study, trial, checkpoint, data set or project; for a non-admin, any token but itself) is a 404, exactly the
answer an id nobody has gets; otherwise the route's own answer. An admin sees every project.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.deps import required_role
from service.context import Context
from service.core.schemas import ProjectCreate
from service.store import projects
from service.store.db import session_scope
from service.store.tokens import create_token, get_token, verify_token
from tests.checkpointed import finish_with_checkpoint
from tests.pairs import pair_rows
from tests.studyspecs import contract_study
from tests.test_validation import serving_fresh

RANK = {"viewer": 0, "member": 1, "admin": 2}
UNKNOWN_STUDY, UNKNOWN_DATASET, UNKNOWN_TOKEN = "st_00000000deadbeef", "ds_00000000deadbeef", "2000000000"


@dataclass(frozen=True)
class Who:
    name: str
    project: str
    role: str
    secret: str
    id: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass(frozen=True)
class Owner:
    """Whose object a request acts on: a project's (study, trial, checkpoint, data set, the project itself), or
    a token."""

    project: str | None = None
    token_id: int | None = None


def sees(who: Who, owner: Owner) -> bool:
    if who.role == "admin":
        return True
    if owner.token_id is not None:
        return owner.token_id == who.id
    return owner.project == who.project


def expected(needed: str, who: Who, owner: Owner | None, ok: int) -> int:
    """THE table: role first (403, whatever the request names), then the project (404), then the route."""
    if RANK[who.role] < RANK[needed]:
        return 403
    if owner is not None and not sees(who, owner):
        return 404
    return ok


# ---------------------------------------------------------------- the world: two projects, four tokens


@dataclass
class World:
    client: TestClient
    ctx: Context
    tmp: Path
    admin: Who
    alpha_member: Who
    alpha_viewer: Who
    beta_member: Who
    alpha_ds: str = ""
    beta_ds: str = ""
    read_study: str = ""  # trial 0 complete with a checkpoint; only read
    changing_study: str = ""  # paused, resumed, stopped, extended
    beta_study: str = ""
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def tokens(self) -> list[Who]:
        return [self.admin, self.alpha_member, self.alpha_viewer, self.beta_member]

    def send(self, who: Who, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, headers={**who.auth, **kwargs.pop("headers", {})}, **kwargs)

    def data(self) -> bytes:
        """Scored pairs no earlier call uploaded."""
        rows = pair_rows("train", 6, seed=1000 + next(self.counter))
        return "".join(f'{{"sentence1": "{r["sentence1"]}", "sentence2": "{r["sentence2"]}", "score": {r["score"]}}}\n'
                       for r in rows).encode()

    def upload(self, who: Who, data: bytes | None = None, project: str | None = None) -> httpx.Response:
        params = {"task": "scored_pairs", "filename": "pairs.jsonl", "score_range": "0,5"}
        if project is not None:
            params["project"] = project
        return self.send(who, "POST", "/v1/datasets", params=params, content=self.data() if data is None else data,
                         headers={"Content-Type": "application/octet-stream"})

    def study_body(self, dataset_id: str, **overrides: Any) -> dict[str, Any]:
        return contract_study(name=f"s{next(self.counter)}", data={
            "train": {"dataset_id": dataset_id}, "eval": {"dataset_id": dataset_id}, "score_range": [0, 5]},
            budget={"n_trials": 3, "max_concurrent_trials": 1}, **overrides)

    def made(self, r: httpx.Response) -> str:
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def victim_study(self) -> str:
        return self.made(self.send(self.alpha_member, "POST", "/v1/studies", json=self.study_body(self.alpha_ds)))

    def victim_dataset(self) -> str:
        return self.made(self.upload(self.alpha_member))

    def victim_token(self) -> int:
        return verify_token(self.ctx.sessions, create_token(self.ctx.sessions, f"victim-{next(self.counter)}",
                                                            project="alpha", role="viewer")).token_id

    def set_status(self, study_id: str, status: str) -> None:
        with session_scope(self.ctx.sessions) as s:
            s.execute(text("UPDATE studies SET status = :st WHERE id = :id"), {"st": status, "id": study_id})

    def status_of(self, study_id: str) -> str | None:
        with session_scope(self.ctx.sessions) as s:
            return s.execute(text("SELECT status FROM studies WHERE id = :id"), {"id": study_id}).scalar()

    def exists(self, path: str) -> bool:
        return self.send(self.admin, "GET", path).status_code == 200


def _who(ctx: Context, name: str, project: str, role: str, secret: str | None = None) -> Who:
    secret = secret or create_token(ctx.sessions, name, project=project, role=role)  # type: ignore[arg-type]
    return Who(name, project, role, secret, verify_token(ctx.sessions, secret).token_id)


@pytest.fixture(scope="module")
def world(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("access")
    with serving_fresh(template_db, tmp, "stsweep_access") as app:
        ctx = app.ctx
        for name in ("alpha", "beta"):
            projects.create_project(ctx.sessions, ProjectCreate(name=name))
        admin_secret = app.client.headers["Authorization"].removeprefix("Bearer ")
        w = World(app.client, ctx, tmp, admin=_who(ctx, "tests", "default", "admin", admin_secret),
                  alpha_member=_who(ctx, "alpha-member", "alpha", "member"),
                  alpha_viewer=_who(ctx, "alpha-viewer", "alpha", "viewer"),
                  beta_member=_who(ctx, "beta-member", "beta", "member"))
        w.alpha_ds = w.made(w.upload(w.alpha_member))
        w.beta_ds = w.made(w.upload(w.beta_member))
        w.read_study = w.victim_study()
        assert finish_with_checkpoint(ctx, w.read_study, tmp) == 0  # before any other study is queued: the claim is this one
        w.changing_study = w.victim_study()
        w.beta_study = w.made(w.send(w.beta_member, "POST", "/v1/studies", json=w.study_body(w.beta_ds)))
        yield w


# ---------------------------------------------------------------- one request per operation


@dataclass
class Call:
    path: str
    owner: Owner | None  # whose object it acts on (None: nobody's: a list, a new token or project)
    ok: int  # the answer when the table lets the token through
    kwargs: dict[str, Any] = field(default_factory=dict)
    unknown: str | None = None  # the same path with an id nobody has: a foreign 404 must be exactly its 404
    unchanged: Callable[[], bool] | None = None  # after a refusal: nothing happened


ALPHA = Owner(project="alpha")


def _state_change(verb: str, before: str) -> Callable[[World], Call]:
    def build(w: World) -> Call:
        w.set_status(w.changing_study, before)
        return Call(f"/v1/studies/{w.changing_study}/{verb}", ALPHA, 200, unknown=f"/v1/studies/{UNKNOWN_STUDY}/{verb}",
                    kwargs={"json": {"n_trials": 1}} if verb == "extend" else {},
                    unchanged=lambda: w.status_of(w.changing_study) == before)
    return build


def _read(path: str, ok: int = 200, **kwargs: Any) -> Callable[[World], Call]:
    """A read of alpha's objects: `{study}` is the study with a checkpoint, `{ds}` alpha's data set."""
    def build(w: World) -> Call:
        return Call(path.format(study=w.read_study, ds=w.alpha_ds), ALPHA, ok, kwargs=dict(kwargs),
                    unknown=path.format(study=UNKNOWN_STUDY, ds=UNKNOWN_DATASET))
    return build


def _delete_study(w: World) -> Call:
    victim = w.victim_study()
    return Call(f"/v1/studies/{victim}", ALPHA, 204, unknown=f"/v1/studies/{UNKNOWN_STUDY}",
                unchanged=lambda: w.exists(f"/v1/studies/{victim}"))


def _delete_dataset(w: World) -> Call:
    victim = w.victim_dataset()
    return Call(f"/v1/datasets/{victim}", ALPHA, 204, unknown=f"/v1/datasets/{UNKNOWN_DATASET}",
                unchanged=lambda: w.exists(f"/v1/datasets/{victim}"))


def _revoke_token(w: World) -> Call:
    victim = w.victim_token()
    return Call(f"/v1/tokens/{victim}", Owner(token_id=victim), 204, unknown=f"/v1/tokens/{UNKNOWN_TOKEN}",
                unchanged=lambda: get_token(w.ctx.sessions, victim).revoked_at is None)


CALLS: dict[tuple[str, str], Callable[[World], Call]] = {
    ("GET", "/healthz"): lambda w: Call("/healthz", None, 200),
    ("GET", "/readyz"): lambda w: Call("/readyz", None, 200),
    ("POST", "/v1/studies"): lambda w: Call("/v1/studies", ALPHA, 201,
                                            kwargs={"json": w.study_body(w.alpha_ds, project="alpha")}),
    ("GET", "/v1/studies"): lambda w: Call("/v1/studies", None, 200, kwargs={"params": {"project": "alpha"}}),
    ("GET", "/v1/studies/{study_id}"): _read("/v1/studies/{study}"),
    ("DELETE", "/v1/studies/{study_id}"): _delete_study,
    ("GET", "/v1/studies/{study_id}/trials"): _read("/v1/studies/{study}/trials"),
    ("GET", "/v1/studies/{study_id}/trials/{number}"): _read("/v1/studies/{study}/trials/0"),
    ("POST", "/v1/studies/{study_id}/pause"): _state_change("pause", "queued"),
    ("POST", "/v1/studies/{study_id}/resume"): _state_change("resume", "paused"),
    ("POST", "/v1/studies/{study_id}/stop"): _state_change("stop", "queued"),
    ("POST", "/v1/studies/{study_id}/extend"): _state_change("extend", "queued"),
    ("POST", "/v1/datasets"): lambda w: Call("/v1/datasets", ALPHA, 201, kwargs={
        "params": {"task": "scored_pairs", "filename": "p.jsonl", "score_range": "0,5", "project": "alpha"},
        "content": w.data(), "headers": {"Content-Type": "application/octet-stream"}}),
    ("GET", "/v1/datasets"): lambda w: Call("/v1/datasets", None, 200, kwargs={"params": {"project": "alpha"}}),
    ("GET", "/v1/datasets/{dataset_id}"): _read("/v1/datasets/{ds}"),
    ("DELETE", "/v1/datasets/{dataset_id}"): _delete_dataset,
    ("GET", "/v1/studies/{study_id}/best-checkpoint"): _read("/v1/studies/{study}/best-checkpoint"),
    ("HEAD", "/v1/studies/{study_id}/best-checkpoint"): _read("/v1/studies/{study}/best-checkpoint"),
    ("GET", "/v1/studies/{study_id}/trials/{number}/checkpoint"): _read("/v1/studies/{study}/trials/0/checkpoint",
                                                                        headers={"Range": "bytes=0-99"}, ok=206),
    ("HEAD", "/v1/studies/{study_id}/trials/{number}/checkpoint"): _read("/v1/studies/{study}/trials/0/checkpoint"),
    ("POST", "/v1/tokens"): lambda w: Call("/v1/tokens", None, 201, kwargs={
        "json": {"name": f"made-{next(w.counter)}", "project": "alpha", "role": "viewer", "expires_in": "1h"}}),
    ("GET", "/v1/tokens"): lambda w: Call("/v1/tokens", None, 200),
    ("GET", "/v1/tokens/me"): lambda w: Call("/v1/tokens/me", None, 200),
    ("DELETE", "/v1/tokens/{token_id}"): _revoke_token,
    ("GET", "/v1/projects"): lambda w: Call("/v1/projects", None, 200),
    ("POST", "/v1/projects"): lambda w: Call("/v1/projects", None, 201,
                                             kwargs={"json": {"name": f"made-{next(w.counter)}"}}),
    ("GET", "/v1/projects/{name}"): lambda w: Call("/v1/projects/alpha", ALPHA, 200, unknown="/v1/projects/nosuch"),
    ("PATCH", "/v1/projects/{name}"): lambda w: Call("/v1/projects/alpha", ALPHA, 200, kwargs={"json": {"share": 1}}),
    ("GET", "/v1/studies/{study_id}/changes"): _read("/v1/studies/{study}/changes"),
    ("GET", "/v1/studies/{study_id}/charts/history"): _read("/v1/studies/{study}/charts/history"),
    ("GET", "/v1/studies/{study_id}/charts/curves"): _read("/v1/studies/{study}/charts/curves"),
    ("GET", "/v1/studies/{study_id}/charts/parallel"): _read("/v1/studies/{study}/charts/parallel"),
    ("GET", "/v1/studies/{study_id}/charts/importance"): _read("/v1/studies/{study}/charts/importance"),
    ("GET", "/v1/workers"): lambda w: Call("/v1/workers", None, 200),
}


def _roles(world: World) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> the role each route of the document states in its dependencies (None: a public one);
    every /v1 route states exactly one."""
    roles: dict[tuple[str, str], str | None] = {}
    for route in iter_route_contexts(world.client.app.router.routes):  # type: ignore[attr-defined]
        dependencies = getattr(route, "dependencies", None) or []
        stated = [d for d in dependencies if hasattr(d.dependency, "required_role")]
        role = required_role(dependencies)
        if route.path.startswith("/v1/"):
            assert len(stated) == 1 and role is not None, f"{route.path} states {len(stated)} roles"
        else:  # the health checks, the dashboard page and assets, /metrics, the docs: none, or one
            assert len(stated) <= 1, f"{route.path} states {len(stated)} roles"
        if getattr(route, "include_in_schema", False):
            roles.update({(method, route.path): role for method in route.methods})
    return roles


def test_every_operation_answers_each_role_and_project_as_the_table_says(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert ("HEAD", "/v1/studies/{study_id}/best-checkpoint") in operations
    assert operations == set(CALLS), f"operations without a row: {operations - set(CALLS)}; " \
                                     f"rows without an operation: {set(CALLS) - operations}"
    roles = _roles(world)
    assert set(roles) == operations
    wrong: list[str] = []
    cells = 0
    for (method, template), build in CALLS.items():
        needed = roles[(method, template)]
        for who in world.tokens:
            call = build(world)
            want = call.ok if needed is None else expected(needed, who, call.owner, call.ok)
            r = world.send(who, method, call.path, **call.kwargs)
            cells += 1
            cell = f"{method} {template} as {who.name}: {r.status_code} (table: {want}) {r.text[:200]}"
            if r.status_code != want:
                wrong.append(cell)
                continue
            if want in (403, 404) and call.unchanged is not None and not call.unchanged():
                wrong.append(f"{cell}: refused, yet it happened")
            if want == 403 and method != "HEAD":
                error = r.json()["error"]
                named = f"a {who.role} token" in error["message"] and f"the {needed} role" in error["message"]
                if error["code"] != "forbidden" or error.get("field") != "role" or not named:
                    wrong.append(f"{cell}: the 403 does not name the roles")
            if want == 404 and call.unknown is not None:  # another project's id reads as one nobody has
                again = world.send(who, method, call.unknown, **call.kwargs)
                if again.status_code != 404 or (method != "HEAD"
                                                and _masked(again, call.unknown) != _masked(r, call.path)):
                    wrong.append(f"{cell}: differs from the 404 of an unknown id: {again.text[:200]}")
    assert cells == len(CALLS) * 4
    assert not wrong, "\n".join(wrong)


def _masked(r: httpx.Response, path: str) -> str:
    """The answer with the ids of its path blanked (so two 404s for two ids compare)."""
    body = r.text
    for part in path.split("/"):
        if part.startswith(("st_", "ds_")) or part.isdigit() or part in ("alpha", "nosuch"):
            body = body.replace(part, "ID")
    return body


# ---------------------------------------------------------------- what the table does not cover


def _projects_in(page: dict[str, Any]) -> set[str]:
    return {item["project"] for item in page["items"]}


def test_lists_show_only_the_tokens_project_and_an_admin_every_one_or_the_one_asked(world: World) -> None:
    for path in ("/v1/studies", "/v1/datasets"):
        for who in (world.alpha_member, world.alpha_viewer, world.beta_member):
            for asked in (None, "alpha", "beta", "default"):
                params = {"project": asked} if asked else {}
                r = world.send(who, "GET", path, params=params)
                assert r.status_code == 200, r.text
                assert _projects_in(r.json()) == {who.project}, (path, who.name, asked)  # its own, whatever asked
        everything = world.send(world.admin, "GET", path, params={"limit": 500}).json()
        assert {"alpha", "beta"} <= _projects_in(everything), path
        assert _projects_in(world.send(world.admin, "GET", path, params={"project": "beta"}).json()) == {"beta"}
        assert world.send(world.admin, "GET", path, params={"project": "nosuch"}).json()["items"] == []
    ids = {s["id"] for s in world.send(world.beta_member, "GET", "/v1/studies").json()["items"]}
    assert ids == {world.beta_study}
    listed = world.send(world.alpha_viewer, "GET", "/v1/projects").json()
    assert [p["name"] for p in listed["items"]] == ["alpha"] and listed["total"] == 1
    names = {p["name"] for p in world.send(world.admin, "GET", "/v1/projects").json()["items"]}
    assert {"default", "alpha", "beta"} <= names


def test_every_token_reads_itself(world: World) -> None:
    for who in world.tokens:
        r = world.send(who, "GET", "/v1/tokens/me")
        assert r.status_code == 200, r.text
        me = r.json()
        assert (me["id"], me["name"], me["project"], me["role"]) == (who.id, who.name, who.project, who.role)
        assert who.secret not in r.text


def test_a_member_or_viewer_revokes_itself_and_the_last_admin_token_stays(world: World) -> None:
    for role in ("member", "viewer"):
        own = _who(world.ctx, f"own-{role}", "alpha", role)
        other = world.victim_token()
        assert world.send(own, "DELETE", f"/v1/tokens/{other}").status_code == 404
        assert get_token(world.ctx.sessions, other).revoked_at is None
        assert world.send(own, "DELETE", f"/v1/tokens/{own.id}").status_code == 204
        assert world.send(own, "GET", "/v1/tokens/me").status_code == 401
    last = world.send(world.admin, "DELETE", f"/v1/tokens/{world.admin.id}")
    assert last.status_code == 409 and "last admin token" in last.json()["error"]["message"], last.text
    second = _who(world.ctx, "second-admin", "alpha", "admin")  # an admin of any project counts
    assert world.send(second, "DELETE", f"/v1/tokens/{second.id}").status_code == 204  # `tests` is still there
    assert world.send(world.admin, "DELETE", f"/v1/tokens/{world.admin.id}").status_code == 409
    assert world.send(world.admin, "GET", "/v1/tokens/me").status_code == 200


def test_only_an_admin_manages_tokens_and_projects(world: World) -> None:
    for who in (world.alpha_member, world.alpha_viewer, world.beta_member):
        for method, path, body in (("POST", "/v1/tokens", {"name": "x", "project": who.project, "role": "viewer"}),
                                   ("POST", "/v1/projects", {"name": "by-a-non-admin"}),
                                   ("PATCH", f"/v1/projects/{who.project}", {"max_trials": 1})):
            r = world.send(who, method, path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (who.name, path, r.text)
    assert world.send(world.admin, "GET", "/v1/projects/by-a-non-admin").status_code == 404
    assert projects.get_project(world.ctx.sessions, "alpha").max_trials is None
    made = world.send(world.admin, "POST", "/v1/tokens", json={"name": "new", "project": "beta", "role": "member"})
    assert made.status_code == 201 and made.json()["token"].startswith("sts_")
    assert verify_token(world.ctx.sessions, made.json()["token"]).project == "beta"


def test_a_non_admin_cannot_create_in_another_project(world: World) -> None:
    def beta_counts() -> tuple[int, int]:
        with session_scope(world.ctx.sessions) as s:
            return (s.execute(text("SELECT count(*) FROM studies WHERE project = 'beta'")).scalar_one(),
                    s.execute(text("SELECT count(*) FROM datasets WHERE project = 'beta'")).scalar_one())

    before = beta_counts()
    for project in ("beta", "nosuch"):
        r = world.send(world.alpha_member, "POST", "/v1/studies",
                       json=world.study_body(world.alpha_ds, project=project))
        assert r.status_code == 404 and r.json()["error"] == {
            "code": "not_found", "message": f"project {project!r} not found", "field": "project"}, r.text
        r = world.upload(world.alpha_member, project=project)
        assert r.status_code == 404 and r.json()["error"]["field"] == "project", r.text
    assert beta_counts() == before
    # An admin may; a study of beta must use beta's data sets (alpha's does not exist there).
    assert world.send(world.admin, "POST", "/v1/studies",
                      json=world.study_body(world.alpha_ds, project="beta")).status_code == 422
    made = world.send(world.admin, "POST", "/v1/studies", json=world.study_body(world.beta_ds, project="beta"))
    assert made.status_code == 201 and made.json()["project"] == "beta"


def test_the_same_bytes_in_two_projects_are_two_data_sets(world: World) -> None:
    data = world.data()
    a = world.upload(world.alpha_member, data)
    b = world.upload(world.beta_member, data)
    assert a.status_code == 201 and b.status_code == 201, (a.text, b.text)  # not 200: beta learns nothing
    a_id, b_id = a.json()["id"], b.json()["id"]
    assert a_id != b_id and a.json()["sha256"] == b.json()["sha256"]
    assert world.send(world.alpha_member, "GET", f"/v1/datasets/{b_id}").status_code == 404
    assert world.send(world.beta_member, "GET", f"/v1/datasets/{a_id}").status_code == 404
    again = world.upload(world.alpha_member, data)
    assert again.status_code == 200 and again.json()["id"] == a_id
    assert world.send(world.beta_member, "DELETE", f"/v1/datasets/{b_id}").status_code == 204
    assert world.send(world.alpha_member, "GET", f"/v1/datasets/{a_id}").status_code == 200  # alpha's stays


def test_idempotency_keys_are_per_project(world: World) -> None:
    key = {"Idempotency-Key": "nightly-sweep"}
    alpha_body, beta_body = world.study_body(world.alpha_ds), world.study_body(world.beta_ds)
    first = world.send(world.alpha_member, "POST", "/v1/studies", json=alpha_body, headers=key)
    assert first.status_code == 201, first.text
    alpha_id = first.json()["id"]
    copied = world.send(world.beta_member, "POST", "/v1/studies", json=alpha_body, headers=key)
    assert copied.status_code == 422 and alpha_id not in copied.text, copied.text  # alpha's data set: not there
    beta = world.send(world.beta_member, "POST", "/v1/studies", json=beta_body, headers=key)
    assert beta.status_code == 201 and beta.json()["id"] != alpha_id, beta.text
    for who, body, study_id in ((world.alpha_member, alpha_body, alpha_id),
                                (world.beta_member, beta_body, beta.json()["id"])):
        replay = world.send(who, "POST", "/v1/studies", json=body, headers=key)
        assert replay.status_code == 200 and replay.json()["id"] == study_id, replay.text


def test_the_python_client_reads_itself_and_an_admin_manages_tokens_and_projects(world: World) -> None:
    from service.client.http import StsweepClient, StsweepClientError

    api = StsweepClient(token=world.admin.secret, http=TestClient(world.client.app))
    assert (api.me().name, api.me().role) == ("tests", "admin")
    made = api.create_token("py", project="beta", role="viewer", expires_in="1h")
    assert made.token.startswith("sts_") and (made.project, made.role) == ("beta", "viewer")
    assert made.expires_at is not None and "py" in {t.name for t in api.list_tokens()}
    assert api.create_project("py-team", max_trials=5).max_trials == 5
    changed = api.update_project("py-team", share=3, max_trials=None)
    assert (changed.share, changed.max_trials) == (3, None) and api.get_project("py-team").share == 3
    viewer = StsweepClient(token=made.token, http=TestClient(world.client.app))
    assert [p.name for p in viewer.list_projects()] == ["beta"]
    with pytest.raises(StsweepClientError) as refused:
        viewer.create_project("by-a-viewer")
    assert refused.value.status == 403 and refused.value.field == "role"
    viewer.revoke_token(made.id)
    with pytest.raises(StsweepClientError) as gone:
        viewer.me()
    assert gone.value.status == 401
