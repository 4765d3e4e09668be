"""Schemathesis over the app's own /openapi.json, against the real server (uvicorn on a socket, real PostgreSQL),
with a valid token and fixture data: files under the data root and an uploaded data set that generated study
bodies reference, so study creation reaches its 201 paths too, and real study / trial / data set ids that the
path parameters use. Every answer must be no 5xx and must conform to the document (status listed, body matching
its schema, content type and required headers). Bounded: a fixed number of examples per operation,
derandomized, so a run takes about the same time and finds the same things every time.

Generated study bodies are a quarter as schemathesis makes them, half valid ones over the fixture data (each of
which must be created: 201) and a quarter valid ones with one value anywhere replaced by arbitrary JSON. The run
must also reach the answers the fixture data exists for (`REACHED`), so it cannot pass on 404s and 422s alone.

Each operation is driven with `operation.as_strategy()` under hypothesis's own `@given` rather than
schemathesis's pytest plugin (`schema.parametrize()`), which reads a pytest-internal attribute that pytest 9.2
no longer has (`request.node._nodeid`).

At the end it prints `FUZZ requests=N server_errors=M` (and the statuses seen per operation) for the record.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.context import Context
from service.store.tokens import create_token, list_tokens
from tests.checkpointed import finish_with_checkpoint
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study

EXAMPLES_PER_OPERATION = 60
EXAMPLES = {"POST /v1/studies": 300, "POST /v1/datasets": 120,  # the operations with the most input
            "GET /v1/studies/{study_id}/best-checkpoint": 120}  # REACHED asks it for both 200s and 206s
# Answers the fixture data must let the fuzzer reach (else it only ever met 404s and 422s there). About a quarter
# of the valid study bodies come with an Idempotency-Key the fuzzer made up (a clash, 409, or a key the header
# bounds refuse, 422): a full run saw 201 only 59 times in 300 examples, hence 45.
REACHED = [("POST /v1/studies", 201, 45), ("valid study bodies", 201, 45), ("POST /v1/datasets", 201, 5),
           ("GET /v1/studies/{study_id}", 200, 10), ("GET /v1/studies/{study_id}/best-checkpoint", 200, 5),
           ("GET /v1/studies/{study_id}/best-checkpoint", 206, 1), ("DELETE /v1/datasets/{dataset_id}", 409, 5),
           ("POST /v1/studies/{study_id}/resume", 409, 1)]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
FILES = ("stsb/train.jsonl", "stsb/dev.jsonl", "stsb/test.jsonl")
# What a study's description may hold: no lone surrogates, no control characters but newline and tab
# (service/core/body_limits.py).
TEXT = st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t")


class Fixtures:
    """What the generated requests can refer to, and what they got back."""

    def __init__(self) -> None:
        self.keep: dict[str, list[Any]] = {}  # ids read, paused, stopped...
        self.victims: dict[str, list[Any]] = {}  # ids a DELETE may take
        self.own_token_id = 0
        self.victim_token_id = 0
        self.accepted_bodies: set[str] = set()  # study bodies that must be created (201, or 200 on a replay)
        self.statuses: Counter[int] = Counter()
        self.answers: Counter[tuple[str, int]] = Counter()  # (operation, status)
        self.server_errors: list[str] = []
        self.forbidden: list[str] = []  # answers the access table forbids (tests/test_access.py)

    def must_accept(self, body: dict[str, Any]) -> dict[str, Any]:
        self.accepted_bodies.add(json.dumps(body, sort_keys=True))
        return body


def _upload(base: str, headers: dict[str, str], path: Path) -> str:
    r = httpx.post(f"{base}/v1/datasets", params={"task": "scored_pairs", "filename": path.name,
                                                   "score_range": "0,5"},
                   content=path.read_bytes(), headers={**headers, "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _study(base: str, headers: dict[str, str], body: dict[str, Any]) -> str:
    r = httpx.post(f"{base}/v1/studies", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def valid_studies(dataset_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Study bodies the server must accept (201), over the fixture files and data sets."""
    ref = st.one_of(st.sampled_from(FILES).map(lambda p: {"path": p}),
                    st.sampled_from(dataset_ids).map(lambda d: {"dataset_id": d}))
    low = st.floats(1e-7, 1e-5)

    def build(name: str, train: dict[str, Any], eval_: dict[str, Any], n_trials: int, sampler: str, seed: int,
              lr_low: float, lr_factor: float, batch: list[int], epochs: int, description: str) -> dict[str, Any]:
        body = contract_study(name=name, description=description,
                              data={"train": train, "eval": eval_, "score_range": [0, 5]},
                              budget={"n_trials": n_trials, "max_concurrent_trials": 2},
                              sampler={"name": sampler, "seed": seed})
        space = body["search_space"]
        space["learning_rate"] = {"distribution": "float", "low": lr_low, "high": lr_low * lr_factor, "log": True}
        space["per_device_train_batch_size"] = {"distribution": "categorical", "choices": batch}
        space["num_train_epochs"] = {"distribution": "int", "low": 1, "high": epochs}
        return body

    return st.builds(
        build, name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\- ]{0,40}", fullmatch=True), train=ref, eval_=ref,
        n_trials=st.integers(1, 30), sampler=st.sampled_from(["tpe", "random", "qmc", "cmaes"]),
        seed=st.integers(0, 2**32 - 1), lr_low=low, lr_factor=st.floats(1.5, 1000),
        batch=st.lists(st.sampled_from([8, 16, 32, 64]), min_size=1, max_size=4, unique=True),
        epochs=st.integers(2, 5), description=st.text(TEXT, max_size=200))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=6)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def near_valid(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one value replaced by any JSON value: the validation layer at every depth."""

    def replace(where: tuple[Any, ...], value: Any) -> dict[str, Any]:
        out = copy.deepcopy(body)
        target: Any = out
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = value
        return out

    return st.tuples(st.sampled_from(_leaves(body)), JSON_VALUES).map(lambda t: replace(*t))


@pytest.fixture
def fixtures() -> Fixtures:
    return Fixtures()


def uploads(rows: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """JSONL scored pairs the upload must accept: a few of the bundled rows."""
    return st.lists(st.sampled_from(rows), min_size=2, max_size=12, unique_by=lambda r: r["sentence1"]).map(
        lambda chosen: "".join(json.dumps(r) + "\n" for r in chosen).encode())


@pytest.fixture
def fuzz_schema(live_server: str, token: str, ctx: Context, data_root: Path, tmp_path: Path,
                fixtures: Fixtures) -> Any:
    """The schema as the live server serves it, with hooks that put fixture data into generated requests."""
    (data_root / "stsb").mkdir()
    for split, name in (("train", "train"), ("dev", "dev"), ("test", "test")):
        write_jsonl(data_root / "stsb" / f"{name}.jsonl", pair_rows(split, 40, seed=1))
    auth = {"Authorization": f"Bearer {token}"}
    kept_ds = _upload(live_server, auth, write_jsonl(tmp_path / "kept.jsonl", pair_rows("train", 50, seed=2)))
    victim_ds = _upload(live_server, auth, write_jsonl(tmp_path / "victim.jsonl", pair_rows("train", 30, seed=3)))
    files_study = contract_study(data={"train": {"path": FILES[0]}, "eval": {"path": FILES[1]},
                                       "score_range": [0, 5]}, budget={"n_trials": 3, "max_concurrent_trials": 1})
    kept_study = _study(live_server, auth, files_study)
    finish_with_checkpoint(ctx, kept_study, tmp_path)
    ds_study = _study(live_server, auth, contract_study(
        name="on-a-dataset", data={"train": {"dataset_id": kept_ds}, "eval": {"dataset_id": kept_ds},
                                   "score_range": [0, 5]}))  # keeps kept_ds in use: its DELETE is a 409
    victim_study = _study(live_server, auth, {**files_study, "name": "victim"})
    create_token(ctx.sessions, "fuzz-victim")  # what DELETE /v1/tokens/{id} may revoke instead of ours
    ids = {t.name: t.id for t in list_tokens(ctx.sessions)}
    fixtures.own_token_id, fixtures.victim_token_id = ids["tests"], ids["fuzz-victim"]
    fixtures.keep = {"study_id": [kept_study, ds_study], "dataset_id": [kept_ds], "number": [0, 1],
                     "token_id": [str(fixtures.victim_token_id)]}
    fixtures.victims = {"study_id": [victim_study], "dataset_id": [victim_ds, kept_ds], "number": [0, 1],
                        "token_id": [str(fixtures.victim_token_id)]}

    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json",
                                           config=schemathesis.Config.from_dict({"headers": auth}))
    accepted = valid_studies([kept_ds]).map(fixtures.must_accept)
    mutated = valid_studies([kept_ds]).flatmap(near_valid)
    files = uploads(pair_rows("train", 200, seed=4))
    upload_query = st.fixed_dictionaries({"task": st.just("scored_pairs"), "filename": st.just("pairs.jsonl"),
                                          "score_range": st.just("0,5")})

    def is_op(context: Any, method: str, path: str) -> bool:
        op = context.operation
        return op is not None and op.method.upper() == method and op.path == path

    @schema.hook("flatmap_body")
    def fixture_bodies(context: Any, body: Any) -> st.SearchStrategy[Any]:
        if is_op(context, "POST", "/v1/studies"):  # a quarter as generated, half valid, a quarter near-valid
            return st.sampled_from(["generated", "valid", "valid", "near"]).flatmap(
                lambda kind: st.just(body) if kind == "generated" else accepted if kind == "valid" else mutated)
        if is_op(context, "POST", "/v1/datasets"):
            if isinstance(body, dict):  # multipart/form-data
                form = files.map(lambda data: {"file": data, "task": "scored_pairs", "score_range": "0,5",
                                               "format": "jsonl"})
                return st.one_of(st.just(body), form)
            return st.one_of(st.just(body), files)  # application/octet-stream
        return st.just(body)

    keys = itertools.count()

    ranges = st.builds(lambda start, length: {"Range": f"bytes={start}-{start + length}"},
                       st.integers(0, 4096), st.integers(0, 4096))

    @schema.hook("flatmap_headers")
    def idempotency_keys(context: Any, headers: Any) -> st.SearchStrategy[Any]:
        """Generated keys repeat (a clash, 409, or a replay, 200); a fresh one or none lets more bodies in. A
        download sometimes asks a range inside the tar (a 206 that generated headers reach only by luck)."""
        if is_op(context, "GET", "/v1/studies/{study_id}/best-checkpoint"):
            return st.one_of(st.just(headers), st.just(headers), ranges.map(lambda r: {**(headers or {}), **r}))
        if not is_op(context, "POST", "/v1/studies"):
            return st.just(headers)
        rest = {k: v for k, v in (headers or {}).items() if k.lower() != "idempotency-key"}
        fresh = st.just(rest).map(lambda r: {**r, "Idempotency-Key": f"fuzz-{next(keys)}"})
        return st.one_of(st.just(headers), st.just(rest), fresh)

    @schema.hook("flatmap_query")
    def fixture_queries(context: Any, query: Any) -> st.SearchStrategy[Any]:
        if is_op(context, "POST", "/v1/datasets"):
            return st.one_of(st.just(query), upload_query)
        return st.just(query)

    @schema.hook("flatmap_path_parameters")
    def known_ids(context: Any, params: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        if not params:
            return st.just(params)
        op = context.operation
        pool = fixtures.victims if op is not None and op.method.upper() == "DELETE" else fixtures.keep
        options = [st.just(params)]
        known = {k: pool[k] for k in params if k in pool}
        if known:
            options.append(st.fixed_dictionaries({**{k: st.just(v) for k, v in params.items()},
                                                  **{k: st.sampled_from(v) for k, v in known.items()}}))
        return st.one_of(*options)

    return schema


def _own_token(case: Any, fixtures: Fixtures) -> bool:
    raw = str((case.path_parameters or {}).get("token_id", ""))
    return raw.isascii() and raw.isdigit() and int(raw) == fixtures.own_token_id


def _check_accepted(case: Any, response: Any, fixtures: Fixtures) -> None:
    """A body from `valid_studies` is a study: 201 (200 when its Idempotency-Key replays one). With a key the
    fuzzer made up, a clash (409) or a refused key (422 naming it) is also right."""
    if case.operation.label != "POST /v1/studies" or not isinstance(case.body, dict):
        return
    if json.dumps(case.body, sort_keys=True) not in fixtures.accepted_bodies:
        return
    fixtures.answers[("valid study bodies", response.status_code)] += 1
    if response.status_code in (200, 201):
        return
    keyed = any(k.lower() == "idempotency-key" for k in (case.headers or {}))
    field = (response.json().get("error") or {}).get("field", "") if response.status_code == 422 else ""
    assert keyed and (response.status_code == 409 or str(field).lower() == "idempotency-key"), (
        f"a valid study body was refused: {response.status_code} {response.text[:500]}")


def _fuzz_operation(operation: Any, fixtures: Fixtures, examples: int | None = None,
                    forbids: Callable[[Any, Any], str | None] | None = None) -> None:
    """Generated requests (schema-valid and schema-invalid) to one operation, checked against the document;
    `forbids(case, response)` says why an answer is one the access table forbids (None: it is not)."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=examples or EXAMPLES.get(operation.label, EXAMPLES_PER_OPERATION), deadline=None,
              derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],  # no shrinking
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=cases)
    def send(case: Any) -> None:
        if case.operation.path == "/v1/tokens/{token_id}" and _own_token(case, fixtures):
            case.path_parameters["token_id"] = str(fixtures.victim_token_id)  # revoking ours would end the run
        response = case.call(timeout=60)
        fixtures.statuses[response.status_code] += 1
        fixtures.answers[(operation.label, response.status_code)] += 1
        if response.status_code >= 500:
            fixtures.server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                          f"{case.as_curl_command()}"[:2000])
        why = forbids(case, response) if forbids is not None else None
        if why is not None:
            fixtures.forbidden.append(f"{case.method} {case.formatted_path} -> {response.status_code} ({why}): "
                                      f"{case.as_curl_command()}"[:2000])
        case.validate_response(response, checks=CHECKS)
        _check_accepted(case, response, fixtures)

    send()


@pytest.mark.fuzz
def test_the_api_answers_every_generated_request_as_documented(fuzz_schema: Any, fixtures: Fixtures,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 27
    failures: list[str] = []
    for operation in operations:
        try:
            _fuzz_operation(operation, fixtures)
        except (Exception, BaseExceptionGroup) as exc:  # one operation's finding (schemathesis raises a
            failures.append(f"{operation.label}: {exc}"[:4000])  # BaseExceptionGroup); the others still run
    line = (f"FUZZ requests={sum(fixtures.statuses.values())} server_errors={len(fixtures.server_errors)} "
            f"operations={len(operations)} seconds={time.monotonic() - started:.0f} "
            f"statuses={json.dumps(dict(sorted(fixtures.statuses.items())))}")
    with capsys.disabled():
        print(f"\n{line}")
        for label in [o.label for o in operations] + ["valid study bodies"]:
            seen = {status: n for (name, status), n in sorted(fixtures.answers.items()) if name == label}
            print(f"  {label}: {seen}")
    assert not fixtures.server_errors, "\n".join(fixtures.server_errors)
    assert not failures, "\n\n".join(failures)
    for label, status, least in REACHED:
        got = fixtures.answers[(label, status)]
        assert got >= least, f"{label} answered {status} only {got} times (at least {least} expected)"
