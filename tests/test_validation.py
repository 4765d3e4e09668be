"""Issue 11, study bodies: hostile values get a 422 naming the field and store nothing. One row per category and
field family: NUL, lone surrogate, too long, seeds, NaN / Infinity, nesting depth, enqueued trials, hub ids,
numeric ranges on name-only parameters, grid size. The rules are service/core/body_limits.py's.

Every refused row posts through the same app and database (module-scoped `client` / `ctx` below, built like
conftest's), so "nothing stored" is checked after every row against everything refused before it; the tests
that expect a 201 get a `fresh` app on their own database.
"""

from __future__ import annotations

import copy
import json
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text

from service.api.app import create_app
from service.context import Context
from service.core import body_limits
from service.core.errors import InvalidInput
from service.core.spec import DataRef, StudySpec, field_errors
from service.settings import Settings
from service.store import optuna_bridge
from service.store.db import session_scope
from service.store.tokens import create_token
from tests import pg
from tests.studyspecs import contract_study

NAN, INF = float("nan"), float("inf")
DATA = {"train": {"path": "stsb/train.jsonl"}, "eval": {"path": "stsb/dev.jsonl"}}


def stsb_files(data_root: Path) -> None:
    (data_root / "stsb").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (data_root / "stsb" / f"{split}.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 0.5}\n')


@dataclass
class App:
    client: TestClient
    ctx: Context


@contextmanager
def serving(settings: Settings) -> Iterator[App]:
    """The real app (guard, routes, errors) on a real database, with a valid token, as conftest's `client`."""
    stsb_files(settings.data_root)  # type: ignore[arg-type]
    ctx = Context(settings, settings.database_url or "")
    try:
        token = create_token(ctx.sessions, "tests")
        with TestClient(create_app(ctx, run_reaper=False), raise_server_exceptions=False) as c:
            c.headers["Authorization"] = f"Bearer {token}"
            yield App(c, ctx)
    finally:
        ctx.close()


@contextmanager
def serving_fresh(template_db: str, root: Path, prefix: str, **overrides: Any) -> Iterator[App]:
    """`serving` over a fresh clone of the template database, with folders under `root` and `overrides` set;
    the database is dropped on exit (one per test module)."""
    name = pg.unique_name(prefix)
    url = pg.create_database(name, template=template_db)
    settings = Settings(database_url=url, home=root / "home", artifact_root=str(root / "artifacts"),
                        data_root=root / "data", _env_file=None, **overrides)  # type: ignore[call-arg]
    try:
        with serving(settings) as app:
            yield app
    finally:
        optuna_bridge.storage.cache_clear()
        pg.drop_database(name)


@pytest.fixture(scope="module")
def shared(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    with serving_fresh(template_db, tmp_path_factory.mktemp("validation"), "stsweep_val") as app:
        yield app


@pytest.fixture
def client(shared: App) -> TestClient:
    return shared.client


@pytest.fixture
def ctx(shared: App) -> Context:
    return shared.ctx


@pytest.fixture
def fresh(settings: Settings) -> Iterator[App]:
    """An app on a database of its own, for the tests that store a study."""
    with serving(settings) as app:
        yield app


def post_raw(client: TestClient, raw: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post("/v1/studies", content=raw, headers=headers)


def post(client: TestClient, body: dict[str, Any]) -> httpx.Response:
    # json.dumps writes NaN / Infinity literals and escapes lone surrogates as \udXXX, as a hostile client can.
    return post_raw(client, json.dumps(body, allow_nan=True).encode())


def stored(ctx: Context) -> tuple[int, int]:
    """(study rows, Optuna studies)."""
    with session_scope(ctx.sessions) as s:
        rows = s.execute(text("SELECT count(*) FROM studies")).scalar_one()
        optuna = s.execute(text("SELECT count(*) FROM optuna.studies")).scalar_one()
    return int(rows), int(optuna)


def assert_refused(response: httpx.Response, field: str, ctx: Context, fragment: str = "") -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input", error
    assert error["field"] == field, error
    assert error["message"].startswith(f"{field}: "), error
    assert fragment in error["message"], error
    assert stored(ctx) == (0, 0), "a refused study left something stored"


def patched(path: str, value: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract example with `value` at a dotted path ("data.train.path", "enqueue_trials.0.x")."""
    body = copy.deepcopy(body or contract_study())
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return body


def with_hf(hf: str, split: str = "train", config: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"hf": hf, "split": split}
    if config is not None:
        ref["config"] = config
    return contract_study(data={**DATA, "train": ref})


def with_split(**split: Any) -> dict[str, Any]:
    return contract_study(data={"split": {"source": {"path": "stsb/train.jsonl"}, **split}})


def with_enqueued(*trials: dict[str, Any]) -> dict[str, Any]:
    return contract_study(enqueue_trials=list(trials))


def test_the_base_body_is_accepted(fresh: App) -> None:
    """The control: every refusal below comes from the one value a row changes."""
    client, ctx = fresh.client, fresh.ctx
    body = contract_study(description="ok", seed=body_limits.SEED_LIMIT - 1, sampler={"name": "tpe", "seed": 0},
                          enqueue_trials=[{"learning_rate": 1e-5, "per_device_train_batch_size": 32,
                                           "num_train_epochs": 2, "loss": "CoSENTLoss"}])
    assert post(client, body).status_code == 201
    assert stored(ctx) == (1, 1)


# ---------------------------------------------------------------- strings: NUL, lone surrogates, length

STRING_FIELDS = [
    ("name", "name", "ok"),
    ("description", "description", "ok"),
    ("base_model", "base_model", "org/model"),
    ("data.train.path", "data.train.path", "stsb/train.jsonl"),
    ("data.columns.score", "data.columns.score", "score"),
    ("objective.metric", "objective.metric", "spearman_cosine"),
    ("search_space.lr_scheduler_type", "search_space.lr_scheduler_type", "linear"),
    ("search_space.loss.choices.1", "search_space.loss.choices.1", "CoSENTLoss"),
]


def _string_rows(bad: str) -> list[Any]:
    rows = [pytest.param(patched(path, value[:1] + bad + value[1:]), field, id=field)
            for path, field, value in STRING_FIELDS]
    rows.append(pytest.param(with_enqueued({"loss": "Co" + bad}), "enqueue_trials.0.loss", id="enqueue value"))
    rows.append(pytest.param(with_hf("x/y" + bad), "data.train.hf", id="hf"))
    rows.append(pytest.param(with_hf("x/y", split="tr" + bad), "data.train.split", id="hf split"))
    rows.append(pytest.param(with_hf("x/y", config="c" + bad), "data.train.config", id="hf config"))
    rows.append(pytest.param(contract_study(data={**DATA, "eval": {"dataset_id": "ds_" + bad}}),
                             "data.eval.dataset_id", id="dataset_id"))
    # a key: named by the object holding it (the key itself may not be printable)
    rows.append(pytest.param(patched("data.columns", {"sentence1": "a", "sco" + bad + "re": "b"}),
                             "data.columns", id="key"))
    return rows


@pytest.mark.parametrize(("body", "field"), _string_rows("\x00"))
def test_nul_is_refused_in_every_string(client: TestClient, ctx: Context, body: dict[str, Any],
                                        field: str) -> None:
    assert_refused(post(client, body), field, ctx, "NUL")


@pytest.mark.parametrize(("body", "field"), _string_rows("\ud800"))
def test_a_lone_surrogate_is_refused_in_every_string(client: TestClient, ctx: Context, body: dict[str, Any],
                                                     field: str) -> None:
    raw = json.dumps(body).encode()
    assert b"\\ud800" in raw  # sent as the JSON escape, the only way to put a lone surrogate on the wire
    assert_refused(post_raw(client, raw), field, ctx, "surrogate")


LONG_ROWS = [
    ("name", body_limits.MAX_NAME_LENGTH),
    ("description", body_limits.MAX_DESCRIPTION_LENGTH),
    ("base_model", body_limits.MAX_BASE_MODEL_LENGTH),
    ("data.columns.score", body_limits.MAX_COLUMN_NAME_LENGTH),
    ("objective.metric", body_limits.MAX_STRING_LENGTH),  # a field with no limit of its own gets the short default
    ("search_space.lr_scheduler_type", body_limits.MAX_STRING_LENGTH),
    ("data.eval.dataset_id", body_limits.MAX_STRING_LENGTH),
]


@pytest.mark.parametrize(("path", "limit"), LONG_ROWS, ids=[r[0] for r in LONG_ROWS])
def test_too_long_strings_are_refused(client: TestClient, ctx: Context, path: str, limit: int) -> None:
    body = patched(path, "a" * (limit + 1))
    assert_refused(post(client, body), path, ctx, f"the limit is {limit}")


@pytest.mark.parametrize(("body", "field", "fragment"), [
    pytest.param(patched("data.train.path", "a/" * 511 + "b.csv"), "data.train.path",
                 f"limit is {body_limits.MAX_PATH_LENGTH}", id="path-total"),
    pytest.param(patched("data.train.path", "d/" + "x" * 300 + ".jsonl"), "data.train.path", "255 bytes",
                 id="path-component-300-chars"),
    pytest.param(patched("data.train.path", "d/" + "é" * 130 + ".jsonl"), "data.train.path", "255 bytes",
                 id="path-component-bytes"),
    pytest.param(with_hf("x/" + "a" * 200), "data.train.hf", f"the limit is {body_limits.MAX_HUB_ID_LENGTH}", id="hf"),
    pytest.param(with_hf("x/" + "a" * 97), "data.train.hf", "at most 96", id="hf-part"),
    pytest.param(with_hf("x/y", split="s" * 201), "data.train.split", "the limit is 200", id="split"),
    pytest.param(patched("search_space.loss_params", {"C" * 201: {}}), "search_space.loss_params", "a key",
                 id="key"),
])
def test_too_long_paths_ids_and_keys_are_refused(client: TestClient, ctx: Context, body: dict[str, Any],
                                                 field: str, fragment: str) -> None:
    assert_refused(post(client, body), field, ctx, fragment)


# ---------------------------------------------------------------- seeds

SEEDS = ["sampler.seed", "seed", "data.seed", "data.split.seed"]


def _seeded(path: str, value: int) -> dict[str, Any]:
    if path == "data.split.seed":
        return with_split(seed=value)
    return patched(path, value)


@pytest.mark.parametrize("value", [-1, 2**32, 2**40, 10**30])
@pytest.mark.parametrize("path", SEEDS)
def test_every_seed_is_0_to_2_32(client: TestClient, ctx: Context, path: str, value: int) -> None:
    assert_refused(post(client, _seeded(path, value)), path, ctx)


@pytest.mark.parametrize("path", SEEDS)
def test_seed_bounds_are_inclusive_exclusive(path: str) -> None:
    for value in (0, 2**32 - 1):
        StudySpec.model_validate(_seeded(path, value))


# ---------------------------------------------------------------- NaN and Infinity

NON_FINITE = [
    ("search_space.learning_rate", NAN),
    ("search_space.learning_rate.low", INF),
    ("search_space.warmup_ratio.high", -INF),
    ("search_space.weight_decay", NAN),
    ("search_space.per_device_train_batch_size.choices.0", INF),
    ("data.score_range.1", NAN),
    ("budget.timeout_seconds", INF),
    ("pruner.percentile", NAN),
    ("evaluation.early_stopping_threshold", -INF),
    ("enqueue_trials.0.learning_rate", NAN),
]


def _non_finite_body(path: str, value: float) -> dict[str, Any]:
    if path == "data.score_range.1":
        return patched("data.score_range", [0, value])
    if path.startswith("enqueue_trials"):
        return with_enqueued({"learning_rate": value})
    return patched(path, value)


@pytest.mark.parametrize(("path", "value"), NON_FINITE, ids=[f"{p}={v}" for p, v in NON_FINITE])
def test_nan_and_infinity_are_refused_never_stored(client: TestClient, ctx: Context, path: str,
                                                   value: float) -> None:
    raw = json.dumps(_non_finite_body(path, value), allow_nan=True).encode()
    assert b"NaN" in raw or b"Infinity" in raw
    assert_refused(post_raw(client, raw), path, ctx, "finite")


@pytest.mark.parametrize("literal", [b"1e400", b"-1e999"])
def test_a_number_too_large_for_a_float_is_infinity_and_refused(client: TestClient, ctx: Context,
                                                                literal: bytes) -> None:
    raw = json.dumps(contract_study(budget={"n_trials": 2, "timeout_seconds": 12345})).encode()
    assert_refused(post_raw(client, raw.replace(b"12345", literal)), "budget.timeout_seconds", ctx, "finite")


def test_split_fractions_and_loss_params_refuse_nan(client: TestClient, ctx: Context) -> None:
    assert_refused(post(client, with_split(eval_fraction=NAN)), "data.split.eval_fraction", ctx, "finite")
    body = patched("search_space.loss_params", {"CoSENTLoss": {"scale": INF}})
    assert_refused(post(client, body), "search_space.loss_params.CoSENTLoss.scale", ctx, "finite")


# ---------------------------------------------------------------- nesting depth


def nested(depth: int, key: str = "a") -> str:
    return f'{{"{key}": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json", None])
def test_a_body_too_deep_is_refused_before_parsing(client: TestClient, ctx: Context,
                                                   content_type: str | None) -> None:
    raw = ('{"name": "deep", "task": "scored_pairs", "search_space": ' + nested(40) + "}").encode()
    field = "search_space" + ".a" * 31
    assert_refused(post_raw(client, raw, content_type), field, ctx, f"deeper than {body_limits.MAX_DEPTH}")


def test_100000_deep_json_is_a_422_and_the_server_goes_on(shared: App) -> None:
    """Under uvicorn, over a real socket: the server answers 422 and goes on serving."""
    from tests.live import serve_in_thread

    auth = {"Authorization": shared.client.headers["Authorization"], "Content-Type": "application/json"}
    with serve_in_thread(create_app(shared.ctx, run_reaper=False)) as url, \
            httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        for raw in (b"[" * 100_000, ("[" * 100_000 + "]" * 100_000).encode(), nested(100_000).encode(),
                    b'{"data": {"columns": ' + b'[{"x": ' * 50_000 + b"]"):
            r = http.post("/v1/studies", content=raw)
            assert r.status_code == 422, r.text
            assert "deeper than" in r.json()["error"]["message"]
            # any JSON route, not just studies
            assert http.request("DELETE", "/v1/tokens/tok_0", content=raw).status_code == 422
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/v1/studies").status_code == 200
    assert stored(shared.ctx) == (0, 0)


def test_depth_within_the_limit_reaches_the_model(client: TestClient, ctx: Context) -> None:
    """32 levels pass the guard; the model then names the unknown field as usual."""
    raw = json.dumps(contract_study(search_space="HERE")).replace('"HERE"', nested(body_limits.MAX_DEPTH - 1))
    assert_refused(post_raw(client, raw.encode()), "search_space.a", ctx, "Extra inputs")


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"description": "[{" * 5000, "k": ['"]]]' * 100]}).encode()
    assert body_limits.json_depth_problem(body) is None
    assert body_limits.json_depth_problem(json.dumps({"x": "\\\"[[["}).encode()) is None


def test_the_model_refuses_depth_without_recursion() -> None:
    """A study file (YAML, CLI) is not scanned by the guard: the model's own walk is iterative."""
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValidationError) as err:
        StudySpec.model_validate(contract_study(search_space={"loss": deep}))
    [error] = field_errors(err.value)
    assert error["field"] == "search_space.loss" + ".0" * 30 and "deeper" in error["message"]


# ---------------------------------------------------------------- enqueued trials


ENQUEUE_ROWS = [
    ({"bogus": 1}, "enqueue_trials.0.bogus", "not a searched hyperparameter"),
    ({"weight_decay": 0.01}, "enqueue_trials.0.weight_decay", "not a searched hyperparameter"),  # fixed, not searched
    ({"learning_rate": "fast"}, "enqueue_trials.0.learning_rate", "not a number"),
    ({"learning_rate": True}, "enqueue_trials.0.learning_rate", "not a number"),
    ({"num_train_epochs": 2.5}, "enqueue_trials.0.num_train_epochs", "whole number"),
    ({"learning_rate": 1e30}, "enqueue_trials.0.learning_rate", "outside the range"),
    ({"learning_rate": 1e-9}, "enqueue_trials.0.learning_rate", "outside the range"),
    ({"num_train_epochs": 4}, "enqueue_trials.0.num_train_epochs", "outside the range"),
    ({"per_device_train_batch_size": 17}, "enqueue_trials.0.per_device_train_batch_size", "not among"),
    ({"per_device_train_batch_size": "16"}, "enqueue_trials.0.per_device_train_batch_size", "not among"),
    ({"loss": "TripletLoss"}, "enqueue_trials.0.loss", "not among"),
]


@pytest.mark.parametrize(("trial", "field", "fragment"), ENQUEUE_ROWS, ids=[r[1] + ":" + r[2] for r in ENQUEUE_ROWS])
def test_enqueued_trials_are_checked_against_the_search_space(client: TestClient, ctx: Context,
                                                              trial: dict[str, Any], field: str,
                                                              fragment: str) -> None:
    assert_refused(post(client, with_enqueued(trial)), field, ctx, fragment)


def test_the_enqueued_entry_at_fault_is_named_by_index(client: TestClient, ctx: Context) -> None:
    body = with_enqueued({"learning_rate": 1e-5}, {"learning_rate": 1e-5, "num_train_epochs": 9})
    assert_refused(post(client, body), "enqueue_trials.1.num_train_epochs", ctx, "outside the range")


def test_enqueued_values_on_a_step_grid() -> None:
    space = {"num_train_epochs": {"distribution": "int", "low": 1, "high": 9, "step": 2},
             "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2, "step": 0.05}}
    ok = contract_study(search_space=space, enqueue_trials=[{"num_train_epochs": 5, "warmup_ratio": 0.15}])
    StudySpec.model_validate(ok)
    for trial, field in (({"num_train_epochs": 4}, "enqueue_trials.0.num_train_epochs"),
                         ({"warmup_ratio": 0.12}, "enqueue_trials.0.warmup_ratio")):
        with pytest.raises(ValidationError) as err:
            StudySpec.model_validate(contract_study(search_space=space, enqueue_trials=[trial]))
        assert field_errors(err.value)[0]["field"] == field


# ---------------------------------------------------------------- hub ids

BAD_HUB_IDS = ["/x", "/some/local/folder", "../..", "..", "./x", "x/..", "https://x", "hf://datasets/x/y",
               "a/b/c", "C:\\x", "C:x", "~/x", "x\\y", ".hidden", "x.", "-x", "a..b", "a--b", "x/y.git",
               "a" * 97, "", "x/", "/", "json", "csv", "Parquet", "buckets/x", "x y", "x/é"]


@pytest.mark.parametrize("hf", BAD_HUB_IDS)
def test_hf_must_be_a_hub_dataset_id(client: TestClient, ctx: Context, hf: str) -> None:
    assert_refused(post(client, with_hf(hf)), "data.train.hf", ctx)


@pytest.mark.parametrize("hf", ["x/y", "glue", "org-1/my_data.v2", "a" * 96 + "/" + "b" * 96, "A.b_c-d"])
def test_hub_ids_the_hub_allows_are_accepted(hf: str) -> None:
    assert StudySpec.model_validate(with_hf(hf)).data.train.hf == hf  # type: ignore[union-attr]


def test_the_split_source_hf_is_checked_too(client: TestClient, ctx: Context) -> None:
    body = contract_study(data={"split": {"source": {"hf": "../..", "split": "train"}}})
    assert_refused(post(client, body), "data.split.source.hf", ctx)


def test_the_packaged_builder_list_covers_the_installed_datasets() -> None:
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    missing = set(_PACKAGED_DATASETS_MODULES) - body_limits.PACKAGED_BUILDERS
    assert not missing, f"add {sorted(missing)} to body_limits.PACKAGED_BUILDERS"


@pytest.mark.parametrize("hf", ["/etc", "../..", "json", "https://x"])
def test_the_worker_loader_refuses_what_submission_refuses(tmp_path: Path, hf: str) -> None:
    """A spec that skipped submission (built without validation) is refused by the worker's loader too."""
    from service.core.tasks import TASKS
    from workers.data import load_ref

    spec = StudySpec.model_validate(contract_study())
    ref = DataRef.model_construct(hf=hf, split="train", path=None, dataset_id=None, config=None, header=True)
    with pytest.raises(InvalidInput) as err:
        load_ref(ref, "data.train", TASKS["scored_pairs"], spec.data, lambda r: tmp_path)
    assert err.value.field == "data.train.hf" and err.value.message == body_limits.hub_id_problem(hf)


def test_the_worker_loader_never_reads_a_local_folder_named_like_a_hub_id(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    """A hub id is looked up in the hub (here: an empty hub cache, offline), never as a path on the worker."""
    from huggingface_hub import constants

    from service.core.tasks import TASKS
    from workers.data import load_ref

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "train.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n')
    spec = StudySpec.model_validate(with_hf("org/name"))
    assert spec.data.train is not None
    with pytest.raises(InvalidInput) as err:
        load_ref(spec.data.train, "data.train", TASKS["scored_pairs"], spec.data, lambda r: tmp_path)
    assert err.value.field == "data.train.hf" and "not in the local hub cache" in err.value.message


# ---------------------------------------------------------------- name-only parameters and grid size


@pytest.mark.parametrize(("param", "distribution"), [
    ("lr_scheduler_type", {"distribution": "int", "low": 0, "high": 10**9}),
    ("optim", {"distribution": "float", "low": 0.0, "high": 1e9}),
    ("loss", {"distribution": "int", "low": 0, "high": 10**18}),
])
def test_ranges_on_name_only_parameters_are_refused(client: TestClient, ctx: Context, param: str,
                                                    distribution: dict[str, Any]) -> None:
    body = patched(f"search_space.{param}", distribution)
    assert_refused(post(client, body), f"search_space.{param}", ctx, "fixed set of names")


HUGE_GRID = {"per_device_train_batch_size": {"distribution": "int", "low": 1, "high": 65536},
             "max_seq_length": {"distribution": "int", "low": 1, "high": 8192},
             "gradient_accumulation_steps": {"distribution": "int", "low": 1, "high": 1024},
             "num_train_epochs": {"distribution": "int", "low": 1, "high": 1000},
             "loss": "CoSENTLoss", "learning_rate": 2e-5, "warmup_ratio": 0.1}


BILLION = {"distribution": "int", "low": 0, "high": 10**9}
BOMBS = [
    (patched("search_space.lr_scheduler_type", BILLION), "search_space.lr_scheduler_type"),
    (patched("search_space.loss", {"distribution": "int", "low": 0, "high": 10**18}), "search_space.loss"),
    (contract_study(sampler={"name": "grid"}, search_space=HUGE_GRID), "search_space"),
    (contract_study(sampler={"name": "grid"}, search_space={**HUGE_GRID, "optim": BILLION}), "search_space.optim"),
]


def test_bombs_are_refused_fast_and_without_memory(client: TestClient, ctx: Context) -> None:
    """Issue 11: `{distribution: int, low: 0, high: 10**9}` on a name-only parameter, or a 5 * 10**14 grid, grew
    the API to 21 GB. Now they are counted, not built: validation stays under 2 MB and the request well
    under a second."""
    for body, field in BOMBS:
        tracemalloc.start()
        try:
            started = time.perf_counter()
            with pytest.raises(ValidationError):
                StudySpec.model_validate(body)
            took = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert took < 0.2 and peak < 2 * 1024 * 1024, (took, peak)
        started = time.perf_counter()
        r = post(client, body)
        assert time.perf_counter() - started < 1.0
        assert_refused(r, field, ctx)


def test_the_grid_cap_is_a_setting(fresh: App) -> None:
    """Over STSWEEP_MAX_GRID_SIZE: 422 naming the search space and the setting; at the cap: accepted."""
    client, ctx = fresh.client, fresh.ctx
    space = {"num_train_epochs": {"distribution": "int", "low": 1, "high": 3},
             "per_device_train_batch_size": {"distribution": "categorical", "choices": [8, 16, 32]},
             "learning_rate": 2e-5, "warmup_ratio": 0.1, "loss": "CoSENTLoss"}
    body = contract_study(sampler={"name": "grid"}, search_space=space)
    ctx.settings.max_grid_size = 8
    assert_refused(post(client, body), "search_space", ctx, "over the limit of 8 (STSWEEP_MAX_GRID_SIZE)")
    ctx.settings.max_grid_size = 9
    assert post(client, body).status_code == 201


def test_a_grid_under_the_ceiling_but_over_the_default_cap(client: TestClient, ctx: Context) -> None:
    space = {**HUGE_GRID, "per_device_train_batch_size": {"distribution": "int", "low": 1, "high": 20_001},
             "max_seq_length": 128, "gradient_accumulation_steps": 1, "num_train_epochs": 1}
    assert StudySpec.model_validate(contract_study(sampler={"name": "grid"}, search_space=space))
    r = post(client, contract_study(sampler={"name": "grid"}, search_space=space))
    assert_refused(r, "search_space", ctx, f"{body_limits.DEFAULT_MAX_GRID_SIZE} (STSWEEP_MAX_GRID_SIZE)")


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("value", ["fp16", "BF16", "float32", "", 16, None])
def test_precision_is_auto_fp32_or_bf16(client: TestClient, ctx: Context, value: Any) -> None:
    assert_refused(post(client, contract_study(precision=value)), "precision", ctx, "'auto', 'fp32' or 'bf16'")
