"""Issue 18, item 1: every number a client sends is bounded so that every consumer can hold it.

The numeric fields of a study are found by walking the pydantic models (a new numeric field without an entry in
service/core/numeric_limits.py fails here); each is posted through the real app on real PostgreSQL at its bound
(201) and just past it at both ends (422 naming that exact field). The other requests' numbers (extend, upload
form fields, token expiry, query and path parameters) get the same treatment, and the extremes that are
accepted are run through their consumers: the claim query, the reaper and the settling SQL on PostgreSQL, the
ETA in Python, a token's expiry.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import text

from service.core import numeric_limits
from service.core.numeric_limits import Bound, bound_for
from service.core.spec import StudySpec
from service.store import lifecycle, queue, reaper
from service.store.db import session_scope
from service.store.tokens import create_token, list_tokens
from tests.studyspecs import contract_study
from tests.test_validation import App, post, serving_fresh

Path = tuple[str, ...]


# ---------------------------------------------------------------- walking the schema


def numeric_paths(model: type[BaseModel], prefix: Path = ()) -> list[Path]:
    """Every location of an int or float a model accepts, `*` for any key or index (bools are not numbers)."""
    found: list[Path] = []
    for name, info in model.model_fields.items():
        _walk(info.annotation, (*prefix, name), found)
    return list(dict.fromkeys(found))


def _walk(tp: Any, path: Path, found: list[Path]) -> None:
    origin, args = get_origin(tp), get_args(tp)
    if tp is bool or origin is Literal or tp is str or tp is type(None):
        return
    if tp in (int, float):
        found.append(path)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        found.extend(numeric_paths(tp, path))
    elif origin is Annotated:
        _walk(args[0], path, found)
    elif origin in (Union, types.UnionType):
        for arg in args:
            _walk(arg, path, found)
    elif origin is list:
        _walk(args[0], (*path, "*"), found)
    elif origin is dict:
        _walk(args[1], (*path, "*"), found)
    elif origin is tuple:
        for i, arg in enumerate(args):
            _walk(arg, (*path, str(i)), found)


STUDY_PATHS = numeric_paths(StudySpec)


def test_the_walk_finds_the_numbers_of_every_part_of_a_study() -> None:
    """The control for the walk itself: fields of every kind of nesting are found."""
    dotted = {".".join(p) for p in STUDY_PATHS}
    for expected in ("budget.timeout_seconds", "pruner.min_resource", "data.score_range.1", "data.columns.*",
                     "enqueue_trials.*.*", "search_space.learning_rate.low", "search_space.learning_rate.step",
                     "search_space.learning_rate.choices.*", "search_space.loss_params.*.*.high",
                     "data.split.seed", "confirm.seeds", "seed"):
        assert expected in dotted, expected
    assert len(dotted) >= 60, sorted(dotted)


def test_every_numeric_field_has_a_bound_in_the_table() -> None:
    missing = [".".join(p) for p in STUDY_PATHS if bound_for(p) is None and not numeric_limits.names_only(p)]
    assert not missing, f"numeric fields without an entry in service/core/numeric_limits.py: {missing}"
    for key, bound in numeric_limits.NUMERIC_LIMITS.items():
        assert bound.low < bound.high and bound.consumer, key
        assert abs(bound.low) < 2**63 and abs(bound.high) < 2**63, key  # every bound fits a BIGINT / float


# ---------------------------------------------------------------- bodies that put one value at one place

INT_PARAMS = {"per_device_train_batch_size", "max_seq_length", "gradient_accumulation_steps"}
CSV_DATA = {"train": {"path": "stsb/train.csv", "header": False}, "eval": {"path": "stsb/dev.csv", "header": False},
            "columns": {"sentence1": 0, "sentence2": 1, "score": 2}}


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _is_int(path: Path) -> bool:
    """Whether the value at `path` is an integer (its model field is an int, or a whole-number parameter)."""
    if path[0] == "search_space":
        return path[1] in INT_PARAMS
    if path[0] in ("enqueue_trials",) or path[-2:-1] == ("score_range",):
        return False
    node: Any = StudySpec
    for part in path:
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            break
        node = _plain(node.model_fields[part].annotation)
    return node is int or path[:2] == ("data", "columns")


def _plain(tp: Any) -> Any:
    """The model class or the number type of an annotation (None, Literal and Annotated stripped)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _plain(args[0])
    if origin in (Union, types.UnionType):
        kinds = [_plain(a) for a in args if a is not type(None) and get_origin(a) is not Literal]
        return kinds[0] if len(kinds) == 1 else tp
    return tp


def body_with(path: Path, value: Any) -> tuple[dict[str, Any], str]:
    """A contract study with `value` at `path` (what else it needs to be valid adjusted), and the field a 422
    must name."""
    body = contract_study()
    dotted = ".".join(path)
    if path[0] == "search_space":
        return _search_space_body(body, path, value)
    if path[0] == "enqueue_trials":  # the top: max_grad_norm reaches it; the bottom: weight_decay starts at 0
        bound = numeric_limits.limit("enqueue_trials.*.*")
        name = "max_grad_norm" if value > 1 else "weight_decay"
        body["search_space"][name] = {"distribution": "float", "low": 1.0 if value > 1 else bound.low,
                                      "high": bound.high if value > 1 else 1.0}
        body["enqueue_trials"] = [{name: value}]
        return body, f"enqueue_trials.0.{name}"
    if path[:2] == ("data", "split"):
        split: dict[str, Any] = {"source": {"path": "stsb/train.jsonl"}}
        if path[2] == "test_fraction":
            split["eval_fraction"] = 1e-300
        split[path[2]] = value
        body["data"] = {"split": split}
        return body, dotted
    if path[:2] == ("data", "columns"):
        body["data"] = copy.deepcopy(CSV_DATA)
        body["data"]["columns"]["score"] = value
        return body, "data.columns.score"
    if path[:2] == ("data", "score_range"):
        low_high = [0.0, 1.0]
        low_high[int(path[2])] = value
        if int(path[2]) == 0 and value >= 1.0:
            low_high[1] = numeric_limits.MAX_SCORE
        if int(path[2]) == 1 and value <= 0.0:
            low_high[0] = -numeric_limits.MAX_SCORE
        body["data"]["score_range"] = low_high
        return body, dotted
    if dotted == "evaluation.every_n_steps":
        body["evaluation"].pop("every_n_examples")
    _set(body, dotted, value)
    return body, dotted


def _search_space_body(body: dict[str, Any], path: Path, value: Any) -> tuple[dict[str, Any], str]:
    space = body["search_space"]
    if path[1] == "loss_params":  # CoSENTLoss's scale, one of the contract's losses
        name, rest = "scale", path[4:]
        holder: dict[str, Any] = space.setdefault("loss_params", {}).setdefault("CoSENTLoss", {})
        prefix = "search_space.loss_params.CoSENTLoss.scale"
    else:
        name, rest, holder, prefix = path[1], path[2:], space, f"search_space.{path[1]}"
    bound = bound_for(path)
    assert bound is not None
    whole = path[1] in INT_PARAMS
    kind = "int" if whole else "float"
    if not rest:
        holder[name] = value
        return body, prefix
    part = rest[0]
    if part == "choices":
        holder[name] = {"distribution": "categorical", "choices": [value]}
        return body, f"{prefix}.choices.0"
    inside_low = bound.low + 1 if whole else (math.nextafter(bound.low, math.inf) if bound.low_open else bound.low)
    inside_high = bound.high
    if part == "low":
        holder[name] = {"distribution": kind, "low": value, "high": inside_high}
    elif part == "high":
        holder[name] = {"distribution": kind, "low": bound.low if not bound.low_open else inside_low, "high": value}
        if value <= holder[name]["low"]:
            holder[name]["low"] = value - 1 if whole else value / 2 if value > 0 else value - 1
    else:  # step
        holder[name] = {"distribution": kind, "low": inside_low, "high": inside_high, "step": value}
    return body, f"{prefix}.{part}"


# ---------------------------------------------------------------- the values at and past each end


def inside_and_past(bound: Bound, whole: bool, end: str) -> tuple[float, float]:
    """(the last value inside the bound at `end`, the first one past it)."""
    if end == "high":
        edge = bound.high
        if whole:
            return (edge - 1, edge) if bound.high_open else (edge, edge + 1)
        return (math.nextafter(edge, -math.inf), edge) if bound.high_open else (edge, math.nextafter(edge, math.inf))
    edge = bound.low
    if whole:
        return (edge + 1, edge) if bound.low_open else (edge, edge - 1)
    return (math.nextafter(edge, math.inf), edge) if bound.low_open else (edge, math.nextafter(edge, -math.inf))


def _cases() -> list[Any]:
    cases = []
    for path in STUDY_PATHS:
        if numeric_limits.names_only(path):
            continue  # test_name_only_parameters_refuse_every_number
        for end in ("high", "low"):
            if path[-1] in ("low", "0") and end == "high" or path[-1] in ("high", "1") and end == "low":
                continue  # low at the top or high at the bottom leaves no room for the other end
            if path[-1] == "step" and end == "low":
                continue  # a step's lowest is its distribution's own rule (> 0), not the table's
            cases.append(pytest.param(path, end, id=f"{'.'.join(path)}@{end}"))
    return cases


@pytest.fixture(scope="module")
def shared(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("bounds")
    with serving_fresh(template_db, root, "stsweep_bounds", lease_seconds=30, heartbeat_seconds=1) as app:
        for split in ("train", "dev"):
            (root / "data" / "stsb" / f"{split}.csv").write_text("a,b,0.5\nc,d,0.25\n")
        yield app


def assert_names(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error


@pytest.mark.parametrize(("path", "end"), _cases())
def test_each_numeric_field_takes_its_bound_and_refuses_just_past_it(shared: App, path: Path, end: str) -> None:
    bound = bound_for(path)
    assert bound is not None
    inside, past = inside_and_past(bound, _is_int(path), end)
    body, field = body_with(path, inside)
    accepted = post(shared.client, body)
    assert accepted.status_code == 201, (inside, accepted.text)
    body, field = body_with(path, past)
    assert_names(post(shared.client, body), field)


NAME_PATHS = [p for p in STUDY_PATHS if numeric_limits.names_only(p)]


@pytest.mark.parametrize("path", NAME_PATHS, ids=[".".join(p) for p in NAME_PATHS])
def test_name_only_parameters_refuse_every_number(shared: App, path: Path) -> None:
    """lr_scheduler_type, optim and loss: the schema admits numbers, the model refuses each (NAMES_ONLY)."""
    body = contract_study()
    name, rest = path[1], path[2:]
    param: Any = 1 if not rest else ({"distribution": "categorical", "choices": [1, 2]} if rest[0] == "choices"
                                     else {"distribution": "int", "low": 1, "high": 2})
    body["search_space"][name] = param
    assert_names(post(shared.client, body), f"search_space.{name}")


def test_the_table_drives_the_models() -> None:
    """No second copy of a number: a model's constraint is the table's."""
    timeout = StudySpec.model_fields["budget"].annotation.model_fields["timeout_seconds"]  # type: ignore[union-attr]
    assert any(getattr(m, "le", None) == numeric_limits.MAX_DURATION_SECONDS for m in timeout.metadata)


# ---------------------------------------------------------------- the accepted extremes fit their consumers


def test_a_study_with_the_longest_timeout_runs_through_the_claim_query_reaper_and_settling(shared: App) -> None:
    """timeout_seconds at its bound: started_at + make_interval(...) in the claim query (twice: before and after
    the study started), the reaper, the settling SQL when a trial ends, extend, and the ETA in Python."""
    client, ctx = shared.client, shared.ctx
    body = contract_study(name="longest-timeout", budget={"n_trials": 3, "max_concurrent_trials": 1,
                                                          "timeout_seconds": numeric_limits.MAX_DURATION_SECONDS})
    created = post(client, body)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    with session_scope(ctx.sessions) as s:  # only this study is claimable
        s.execute(text("UPDATE studies SET status = 'paused' WHERE id <> :id"), {"id": study_id})
    first = queue.claim(ctx.sessions, None, 30)
    assert first is not None and first[0].study_id == study_id
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": first[0].lease.trial_id})
    reaped = reaper.reap_once(ctx)
    assert [r.study_id for r in reaped] == [study_id]
    second = queue.claim(ctx.sessions, None, 30)  # the study has started: the interval is added to started_at
    assert second is not None and second[0].study_id == study_id
    queue.finish(ctx.sessions, second[0].lease, queue.Finish(state="failed", failure_reason="test"), 3)
    assert lifecycle.extend(ctx.sessions, study_id, 1, numeric_limits.MAX_TRIALS) in ("running", "queued")
    read = client.get(f"/v1/studies/{study_id}")
    assert read.status_code == 200, read.text
    assert read.json()["spec"]["budget"]["timeout_seconds"] == numeric_limits.MAX_DURATION_SECONDS


def test_a_token_with_the_longest_expiry_is_stored_and_listed(shared: App) -> None:
    longest = numeric_limits.MAX_DURATION_SECONDS
    create_token(shared.ctx.sessions, "longest", expires_in_seconds=longest)
    listed = [t for t in list_tokens(shared.ctx.sessions) if t.name == "longest"]
    assert listed and listed[0].expires_at is not None
    assert listed[0].expires_at.year >= datetime.now(timezone.utc).year + 99
    from service.core.errors import InvalidInput

    for past in (longest + 1, 1e303, 10**400, 0):
        with pytest.raises(InvalidInput) as refused:
            create_token(shared.ctx.sessions, "too-long", expires_in_seconds=past)
        assert refused.value.field == "expires_in_seconds"


# ---------------------------------------------------------------- the other requests


def test_extend_takes_its_bound_and_refuses_past_it(shared: App) -> None:
    created = post(shared.client, contract_study(name="extended", budget={"n_trials": 1}))
    study_id = created.json()["id"]
    bound = numeric_limits.limit("extend.n_trials")
    ok = shared.client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": int(bound.high) - 1})
    assert ok.status_code == 200, ok.text
    for past in (int(bound.high) + 1, 0, 10**30):
        assert_names(shared.client.post(f"/v1/studies/{study_id}/extend", json={"n_trials": past}), "n_trials")


@pytest.mark.parametrize(("url", "param", "key"), [
    ("/v1/studies?offset={}", "offset", "query.offset"),
    ("/v1/studies?limit={}", "limit", "query.limit"),
    ("/v1/datasets?offset={}", "offset", "query.offset"),
    ("/v1/studies/{study}/changes?cursor={}", "cursor", "query.cursor"),
    ("/v1/studies/{study}/trials/{}", "number", "path.number"),
])
def test_query_and_path_numbers_take_their_bound_and_refuse_past_it(shared: App, url: str, param: str,
                                                                     key: str) -> None:
    if "{study}" in url:  # a study that exists: one the token cannot see is a 404 before its numbers are read
        study_id = post(shared.client, contract_study(name="numbers", budget={"n_trials": 1})).json()["id"]
        url = url.replace("{study}", study_id)
    bound = numeric_limits.limit(key)
    at = shared.client.get(url.format(int(bound.high)))
    assert at.status_code in (200, 404), at.text  # 404: the study does not exist, the number was fine
    for past in (int(bound.high) + 1, int(bound.low) - 1):
        assert_names(shared.client.get(url.format(past)), param)


UPLOAD = b"sentence1,sentence2,score\na,b,0.5\nc,d,0.25\n"


def _upload(client: TestClient, **form: str) -> httpx.Response:
    return client.post("/v1/datasets", files={"file": ("pairs.csv", UPLOAD, "text/csv")},
                       data={"task": "scored_pairs", **form})


def test_upload_score_range_takes_its_bound_and_refuses_past_it(shared: App) -> None:
    bound = numeric_limits.limit("upload.score_range.*")
    assert _upload(shared.client, score_range=f"[{bound.low!r}, {bound.high!r}]").status_code in (200, 201)
    for low_high in ([bound.low, math.nextafter(bound.high, math.inf)], [math.nextafter(bound.low, -math.inf), 0],
                     [0, 1e303]):
        assert_names(_upload(shared.client, score_range=f"[{low_high[0]!r}, {low_high[1]!r}]"), "score_range")


def test_upload_column_positions_refuse_past_their_bound(shared: App) -> None:
    past = int(numeric_limits.limit("upload.columns.*").high) + 1
    response = _upload(shared.client, header="false", columns=f'{{"sentence1": 0, "sentence2": 1, "score": {past}}}')
    assert_names(response, "columns")
    assert "largest allowed" in response.json()["error"]["message"]
