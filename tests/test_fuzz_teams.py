"""Schemathesis with the tokens the access table refuses (tests/test_access.py), against the real server: a
viewer of project `alpha`, then a member of project `beta` (a foreign token), over alpha's objects (a data set,
a study with a finished trial and its checkpoint, alpha's member token, the project itself), which the path
parameters, the `project` query and the study bodies name. Besides test_fuzz's checks (no 5xx, every answer as
the document says), no answer the table forbids:

- the viewer never gets a 2xx on a write, nor on any route whose role is above viewer;
- the foreign token never gets a 2xx on a path naming alpha's study, data set, project or token, and no 2xx
  answer of its shows anything of alpha (an id, an object whose `project` is alpha: lists, a study or data set
  made with `project: alpha`).

Fewer examples per operation than the admin run (`EXAMPLES`), derandomized; it prints a `FUZZ-TEAMS` line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st

from service.context import Context
from service.core.schemas import ProjectCreate
from service.store import projects
from service.store.tokens import create_token, verify_token
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study
from tests.checkpointed import finish_with_checkpoint
from tests.test_fuzz import Fixtures, _fuzz_operation, _study, _upload, uploads

EXAMPLES = 12  # per operation and token (the admin run: 60)
RANK = {"viewer": 0, "member": 1, "admin": 2}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Alpha:
    """Project alpha's objects, made by its member."""

    def __init__(self, base: str, ctx: Context, tmp_path: Path) -> None:
        for name in ("alpha", "beta"):
            projects.create_project(ctx.sessions, ProjectCreate(name=name))
        self.member = create_token(ctx.sessions, "alpha-member", project="alpha", role="member")
        self.member_id = verify_token(ctx.sessions, self.member).token_id
        auth = {"Authorization": f"Bearer {self.member}"}
        self.dataset = _upload(base, auth, write_jsonl(tmp_path / "alpha.jsonl", pair_rows("train", 30, seed=5)))
        self.study = _study(base, auth, self.body())
        finish_with_checkpoint(ctx, self.study, tmp_path)
        self.names = {self.study, self.dataset, "alpha", str(self.member_id)}  # what a path may name

    def body(self, **overrides: Any) -> dict[str, Any]:
        return contract_study(data={"train": {"dataset_id": self.dataset}, "eval": {"dataset_id": self.dataset},
                                    "score_range": [0, 5]}, budget={"n_trials": 3, "max_concurrent_trials": 1},
                              **overrides)


def _shows_alpha(value: Any) -> bool:
    """Whether a JSON answer holds an object of project alpha (or the project itself)."""
    if isinstance(value, dict):
        if value.get("project") == "alpha" or (value.get("name") == "alpha" and "data_dir" in value):
            return True
        return any(_shows_alpha(v) for v in value.values())
    if isinstance(value, list):
        return any(_shows_alpha(v) for v in value)
    return False


def _team_schema(base: str, secret: str, alpha: Alpha, rows: list[dict[str, Any]]) -> Any:
    """The live document, with hooks that put alpha's ids, `project=alpha` and alpha's study bodies into the
    generated requests."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=schemathesis.Config.from_dict(
        {"headers": {"Authorization": f"Bearer {secret}"}}))
    pools: dict[str, list[Any]] = {"study_id": [alpha.study], "dataset_id": [alpha.dataset], "number": [0, 1],
                                   "name": ["alpha"], "token_id": [str(alpha.member_id)]}
    bodies = st.sampled_from([alpha.body(project="alpha"), alpha.body(name="no-project")])
    files = uploads(rows)
    upload_query = st.fixed_dictionaries({"task": st.just("scored_pairs"), "filename": st.just("p.jsonl"),
                                          "score_range": st.just("0,5"), "project": st.just("alpha")})

    def label(context: Any) -> str:
        op = context.operation
        return f"{op.method.upper()} {op.path}" if op is not None else ""

    @schema.hook("flatmap_path_parameters")
    def alpha_ids(context: Any, params: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        known = {k: pools[k] for k in params or {} if k in pools}
        if not known:
            return st.just(params)
        return st.one_of(st.just(params), st.fixed_dictionaries(
            {**{k: st.just(v) for k, v in params.items()}, **{k: st.sampled_from(v) for k, v in known.items()}}))

    @schema.hook("flatmap_query")
    def alpha_project(context: Any, query: Any) -> st.SearchStrategy[Any]:
        if label(context) == "POST /v1/datasets":
            return st.one_of(st.just(query), upload_query)
        if label(context) in ("GET /v1/studies", "GET /v1/datasets"):
            return st.one_of(st.just(query), st.just({**(query or {}), "project": "alpha"}))
        return st.just(query)

    @schema.hook("flatmap_body")
    def alpha_bodies(context: Any, body: Any) -> st.SearchStrategy[Any]:
        if label(context) == "POST /v1/studies":
            return st.one_of(st.just(body), bodies)
        if label(context) == "POST /v1/datasets" and not isinstance(body, dict):
            return st.one_of(st.just(body), files)
        if label(context) == "POST /v1/tokens":
            return st.one_of(st.just(body), st.just({"name": "x", "project": "alpha", "role": "admin"}))
        return st.just(body)

    return schema


def _viewer_forbids(roles: dict[tuple[str, str], str | None]) -> Any:
    def forbids(case: Any, response: Any) -> str | None:
        if not 200 <= response.status_code < 300:
            return None
        method = case.method.upper()
        needed = roles.get((method, case.operation.path))
        if needed is not None and RANK[needed] > RANK["viewer"]:
            return f"the route needs {needed}"
        return "a viewer wrote" if method in WRITES else None
    return forbids


def _foreign_forbids(alpha: Alpha) -> Any:
    def forbids(case: Any, response: Any) -> str | None:
        if not 200 <= response.status_code < 300:
            return None
        named = {str(v) for v in (case.path_parameters or {}).values()} & alpha.names
        if named:
            return f"alpha's {sorted(named)} answered"
        if case.method.upper() == "HEAD" or not response.content:
            return None
        if alpha.study in response.text or alpha.dataset in response.text:
            return "an id of alpha in the answer"
        try:
            shown = _shows_alpha(json.loads(response.content))
        except ValueError:  # a checkpoint tar of the token's own project
            shown = False
        return "an object of alpha in the answer" if shown else None
    return forbids


@pytest.mark.fuzz
def test_a_viewer_and_a_foreign_token_get_nothing_the_table_forbids(live_server: str, ctx: Context,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    alpha = Alpha(live_server, ctx, tmp_path)
    doc = httpx.get(f"{live_server}/openapi.json").json()
    roles = {(m.upper(), p): op.get("x-role") for p, item in doc["paths"].items() for m, op in item.items()}
    rows = pair_rows("train", 200, seed=4)
    lines, failures = [], []
    for name, project, role, forbids in (("alpha-viewer", "alpha", "viewer", _viewer_forbids(roles)),
                                         ("beta-member", "beta", "member", _foreign_forbids(alpha))):
        secret = create_token(ctx.sessions, name, project=project, role=role)  # type: ignore[arg-type]
        fixtures = Fixtures()
        fixtures.own_token_id, fixtures.victim_token_id = verify_token(ctx.sessions, secret).token_id, alpha.member_id
        schema = _team_schema(live_server, secret, alpha, rows)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            try:
                _fuzz_operation(operation, fixtures, EXAMPLES, forbids)
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{name}: {operation.label}: {exc}"[:4000])
        lines.append(f"{name}: requests={sum(fixtures.statuses.values())} "
                     f"statuses={json.dumps(dict(sorted(fixtures.statuses.items())))}")
        failures += [f"{name}: 5xx: {e}" for e in fixtures.server_errors]
        failures += [f"{name}: forbidden: {e}" for e in fixtures.forbidden]
        reached = fixtures.answers
        if role == "viewer":  # it read alpha, and was refused writes
            assert reached[("GET /v1/studies/{study_id}", 200)] > 0 and reached[("POST /v1/studies", 403)] > 0
            assert reached[("GET /v1/studies/{study_id}/best-checkpoint", 200)] > 0
        else:  # it met alpha's ids and `project: alpha`, and got its own lists
            assert reached[("GET /v1/studies/{study_id}", 404)] > 0 and reached[("POST /v1/studies", 404)] > 0
            assert reached[("GET /v1/studies", 200)] > 0 and reached[("POST /v1/datasets", 404)] > 0
    with capsys.disabled():
        print(f"\nFUZZ-TEAMS examples_per_operation={EXAMPLES} seconds={time.monotonic() - started:.0f}")
        for line in lines:
            print(f"  {line}")
    assert not failures, "\n\n".join(failures)
