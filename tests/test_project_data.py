"""Each project's files and data sets are its own. `path` references resolve in STSWEEP_DATA_ROOT/<project>
(`default`: the root itself, minus the other projects' folders), at submission and again in the worker, with
every link resolved; uploaded data sets are stored, listed, read and deleted per project."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.context import Context
from service.core.errors import InvalidInput, NotFound
from service.core.spec import DataRef
from service.store.tokens import create_token
from tests.pairs import pair_rows, write_jsonl
from tests.studyspecs import contract_study
from workers.resolve import make_resolver

NOT_IN_FOLDER = "is not a file in the project's data folder"


def write(path: Path, text: str = '{"sentence1": "a", "sentence2": "b", "score": 1.0}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(data_root: Path, tmp_path: Path) -> Path:
    """Files for `default` (at the root, and in a folder that is no project's), `alpha` and `beta`, one outside
    the root, and links leading out of alpha's folder (to beta's, to the root, out of the root)."""
    write(data_root / "train.jsonl")
    write(data_root / "dev.jsonl")
    write(data_root / "shared" / "train.jsonl")
    write(data_root / "alpha" / "train.jsonl")
    write(data_root / "alpha" / "dev.jsonl")
    write(data_root / "alpha" / "only-alpha.jsonl")
    write(data_root / "beta" / "x.jsonl")
    write(tmp_path / "outside.jsonl")
    (data_root / "alpha" / "to-beta.jsonl").symlink_to(data_root / "beta" / "x.jsonl")
    (data_root / "alpha" / "to-root.jsonl").symlink_to(data_root / "train.jsonl")
    (data_root / "alpha" / "to-outside.jsonl").symlink_to(tmp_path / "outside.jsonl")
    (data_root / "alpha" / "beta-dir").symlink_to(data_root / "beta", target_is_directory=True)
    (data_root / "peek").symlink_to(data_root / "alpha", target_is_directory=True)  # default's link into alpha
    return data_root


@pytest.fixture
def members(client: TestClient, ctx: Context) -> dict[str, str]:
    """Projects alpha and beta (made by the default admin over the API), a member token for each."""
    for name in ("alpha", "beta"):
        r = client.post("/v1/projects", json={"name": name})
        assert r.status_code == 201 and r.json()["data_dir"] == name, r.text
    return {name: create_token(ctx.sessions, f"{name}-member", project=name, role="member")
            for name in ("alpha", "beta")}


def as_token(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def study(train: str, eval_: str = "dev.jsonl") -> dict[str, Any]:
    body = contract_study(budget={"n_trials": 1, "max_concurrent_trials": 1})
    body["data"] = {"train": {"path": train}, "eval": {"path": eval_}}
    return body


def submit(client: TestClient, body: dict[str, Any], token: str | None = None) -> Any:
    return client.post("/v1/studies", json=body, headers=as_token(token) if token else None)


def refused(r: Any, field: str = "data.train.path") -> str:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    return str(error["message"])


def test_a_project_resolves_paths_in_its_own_folder(client: TestClient, root: Path, members: dict[str, str]) -> None:
    alpha = members["alpha"]
    made = submit(client, study("only-alpha.jsonl"), alpha)
    assert made.status_code == 201, made.text
    assert made.json()["project"] == "alpha"
    # The default project's files are not alpha's: a name only at the root does not exist for alpha.
    write(root / "only-default.jsonl")
    assert NOT_IN_FOLDER in refused(submit(client, study("only-default.jsonl"), alpha))
    assert "(STSWEEP_DATA_ROOT/alpha)" in refused(submit(client, study("only-default.jsonl"), alpha))
    # beta does not see alpha's files either, and its own resolve in beta/.
    assert NOT_IN_FOLDER in refused(submit(client, study("only-alpha.jsonl"), members["beta"]))
    write(root / "beta" / "dev.jsonl")
    assert submit(client, study("x.jsonl"), members["beta"]).status_code == 201


@pytest.mark.parametrize("path", ["../beta/x.jsonl", "/etc/passwd.jsonl", "to-beta.jsonl", "to-root.jsonl",
                                  "to-outside.jsonl", "beta-dir/x.jsonl", "alpha/train.jsonl"])
def test_alpha_cannot_leave_its_folder(client: TestClient, root: Path, members: dict[str, str], path: str) -> None:
    """'..' and absolute paths are refused by the study file itself; links out of alpha's folder (to beta's, to
    the root's files, out of the root; a file or a folder link) by the folder check; `alpha/...` does not
    name alpha's own folder again."""
    message = refused(submit(client, study(path), members["alpha"]))
    assert NOT_IN_FOLDER in message or "may not contain '..'" in message, message
    # The same refusal for eval: the field named is the one at fault.
    refused(submit(client, study("train.jsonl", path), members["alpha"]), "data.eval.path")


def test_default_keeps_its_root_files_and_cannot_reach_a_project(client: TestClient, root: Path,
                                                                  members: dict[str, str]) -> None:
    # An upgraded one-project deployment works as before: files at the root and in folders of no project.
    assert submit(client, study("train.jsonl")).status_code == 201
    assert submit(client, study("shared/train.jsonl")).status_code == 201
    # A project's folder is refused to default, by name or through a link; with the very message of a missing
    # file, so the refusal tells nothing of which projects or files exist.
    into_alpha = refused(submit(client, study("alpha/train.jsonl")))
    missing = refused(submit(client, study("gamma/train.jsonl")))
    assert into_alpha == missing.replace("gamma", "alpha")
    assert NOT_IN_FOLDER in into_alpha and "(STSWEEP_DATA_ROOT)" in into_alpha
    assert NOT_IN_FOLDER in refused(submit(client, study("peek/train.jsonl")))
    assert NOT_IN_FOLDER in refused(submit(client, study("beta/x.jsonl")))
    # An admin of default placing a study in alpha gets alpha's folder, not the root.
    placed = client.post("/v1/studies", json={**study("only-alpha.jsonl"), "project": "alpha"})
    assert placed.status_code == 201 and placed.json()["project"] == "alpha", placed.text
    assert NOT_IN_FOLDER in refused(client.post("/v1/studies", json={**study("train.jsonl", "alpha/dev.jsonl"),
                                                                     "project": "alpha"}), "data.eval.path")


def test_the_worker_checks_again(client: TestClient, ctx: Context, root: Path, members: dict[str, str],
                                 tmp_path: Path) -> None:
    """The worker's resolver (workers/resolve.py) reads the study's project folder from the store when it
    resolves: a file swapped for a link after submission, or a folder that became a project since, is refused
    there too."""
    alpha_study = submit(client, study("train.jsonl"), members["alpha"]).json()["id"]
    resolve = make_resolver(ctx, tmp_path / "cache", alpha_study)
    assert resolve(DataRef(path="train.jsonl")) == (root / "alpha" / "train.jsonl").resolve()
    assert resolve(DataRef(path="only-alpha.jsonl")) == (root / "alpha" / "only-alpha.jsonl").resolve()
    for path in ("to-beta.jsonl", "to-root.jsonl", "to-outside.jsonl", "beta-dir/x.jsonl", "nothing.jsonl"):
        with pytest.raises(InvalidInput, match=NOT_IN_FOLDER) as caught:
            resolve(DataRef(path=path))
        assert caught.value.field == "data.path"
    # The file the study was accepted with is replaced by a link into beta's folder: refused at training time.
    (root / "alpha" / "train.jsonl").unlink()
    (root / "alpha" / "train.jsonl").symlink_to(root / "beta" / "x.jsonl")
    with pytest.raises(InvalidInput, match=NOT_IN_FOLDER):
        resolve(DataRef(path="train.jsonl"))

    # A default study accepted with gamma/train.jsonl (no project then); gamma becomes a project: refused.
    write(root / "gamma" / "train.jsonl")
    default_study = submit(client, study("gamma/train.jsonl")).json()["id"]
    resolve_default = make_resolver(ctx, tmp_path / "cache", default_study)
    assert resolve_default(DataRef(path="gamma/train.jsonl")) == (root / "gamma" / "train.jsonl").resolve()
    assert resolve_default(DataRef(path="train.jsonl")) == (root / "train.jsonl").resolve()
    assert client.post("/v1/projects", json={"name": "gamma"}).status_code == 201
    with pytest.raises(InvalidInput, match=NOT_IN_FOLDER):
        resolve_default(DataRef(path="gamma/train.jsonl"))
    with pytest.raises(InvalidInput, match=NOT_IN_FOLDER):
        resolve_default(DataRef(path="alpha/train.jsonl"))
    assert resolve_default(DataRef(path="train.jsonl")) == (root / "train.jsonl").resolve()

    # A study deleted meanwhile resolves nothing.
    assert client.delete(f"/v1/studies/{default_study}").status_code in (202, 204)
    with pytest.raises(NotFound):
        resolve_default(DataRef(path="train.jsonl"))


def upload(client: TestClient, path: Path, token: str) -> Any:
    with path.open("rb") as f:
        return client.post("/v1/datasets", data={"task": "scored_pairs", "score_range": "0,5"},
                           files={"file": (path.name, f, "application/octet-stream")}, headers=as_token(token))


def test_same_bytes_in_two_projects_are_two_data_sets(client: TestClient, ctx: Context, members: dict[str, str],
                                                      tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows("train", 40, seed=1))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    store = Path(ctx.settings.artifact_location())
    alpha, beta = members["alpha"], members["beta"]
    a, b = upload(client, path, alpha), upload(client, path, beta)
    assert a.status_code == b.status_code == 201, (a.text, b.text)  # beta's is new to beta: nothing tells it more
    a_id, b_id = a.json()["id"], b.json()["id"]
    assert a_id != b_id and a.json()["sha256"] == b.json()["sha256"] == sha
    assert (a.json()["project"], b.json()["project"]) == ("alpha", "beta")
    objects = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    assert objects == [f"datasets/alpha/{sha}.jsonl", f"datasets/beta/{sha}.jsonl"]
    assert upload(client, path, alpha).status_code == 200  # the same bytes again in alpha: alpha's one data set

    # Each project lists and reads only its own; the other's id does not exist for it.
    for token, mine, theirs in ((alpha, a_id, b_id), (beta, b_id, a_id)):
        listed = client.get("/v1/datasets", headers=as_token(token)).json()
        assert [d["id"] for d in listed["items"]] == [mine] and listed["total"] == 1
        assert client.get(f"/v1/datasets/{mine}", headers=as_token(token)).status_code == 200
        assert client.get(f"/v1/datasets/{theirs}", headers=as_token(token)).status_code == 404
        assert client.delete(f"/v1/datasets/{theirs}", headers=as_token(token)).status_code == 404
    assert {d["id"] for d in client.get("/v1/datasets").json()["items"]} == {a_id, b_id}  # the admin sees both

    # Deleting alpha's leaves beta's data set and its stored object.
    assert client.delete(f"/v1/datasets/{a_id}", headers=as_token(alpha)).status_code == 204
    assert client.get(f"/v1/datasets/{a_id}", headers=as_token(alpha)).status_code == 404
    kept = client.get(f"/v1/datasets/{b_id}", headers=as_token(beta))
    assert kept.status_code == 200 and kept.json()["sha256"] == sha
    assert (store / f"datasets/beta/{sha}.jsonl").read_bytes() == path.read_bytes()
    assert not (store / f"datasets/alpha/{sha}.jsonl").exists()
