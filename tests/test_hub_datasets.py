"""Hub data sets are read from their own repository only, through the same readers and limits as an upload.

A fake huggingface_hub cache in tmp_path (laid out as file_download.py writes it: refs/main holding the commit,
snapshots/<commit>/<path> relative links into blobs/), HF_HUB_OFFLINE on, and the worker's own loader
(workers.data.load_ref / build_datasets) in process: no worker, no training, no network.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from service.core.errors import InvalidInput
from service.core.limits import ReadLimits
from service.core.spec import DataRef, StudySpec
from service.core.tasks import TASKS
from workers.data import build_datasets, load_ref

MARKER = "TOP-SECRET-MARKER-7f3a"
ROWS = [{"sentence1": f"a cat sat {i}", "sentence2": f"a cat was sitting {i}", "score": float(i % 6)}
        for i in range(6)]


# ---------------------------------------------------------------- a hub cache and a loopback server


@dataclass
class FakeHub:
    cache: Path
    secret: Path  # a file on this machine, outside the cache, holding MARKER in a valid data file

    def repo(self, repo_id: str, files: dict[str, bytes], card: dict[str, Any] | None = None,
             links: dict[str, Path] | None = None) -> Path:
        """A cached repository as huggingface_hub lays one out; `links`: snapshot entries that point anywhere."""
        folder = self.cache / ("datasets--" + repo_id.replace("/", "--"))
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(commit)  # no newline, as the library writes it
        snapshot = folder / "snapshots" / commit
        if card is not None:
            files = {**files, "README.md": f"---\n{yaml.safe_dump(card)}---\n# card\n".encode()}
        for name, data in files.items():
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            pointer = snapshot / name
            pointer.parent.mkdir(parents=True, exist_ok=True)
            pointer.symlink_to(os.path.relpath(blob, pointer.parent))
        for name, target in (links or {}).items():
            pointer = snapshot / name
            pointer.parent.mkdir(parents=True, exist_ok=True)
            pointer.symlink_to(target)
        return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    # huggingface_hub reads its environment when imported: set both the variables and its constants.
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    secret = tmp_path / "secret.csv"
    secret.write_text(f"sentence1,sentence2,score\n{MARKER},{MARKER},{MARKER}\n")
    return FakeHub(cache, secret)


@dataclass
class Loopback:
    url: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    """A real HTTP server on 127.0.0.1 that would serve MARKER rows, and records every request."""
    state = Loopback(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            state.hits.append(self.path)
            body = f"sentence1,sentence2,score\n{MARKER},{MARKER},{MARKER}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    lines = ["sentence1,sentence2,score"] + [f"{r['sentence1']},{r['sentence2']},{r['score']}" for r in rows]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def spec(train: dict[str, Any], eval_: dict[str, Any] | None = None) -> StudySpec:
    return StudySpec.model_validate({"name": "hub", "task": "scored_pairs",
                                     "data": {"train": train, "eval": eval_ or train, "score_range": [0, 5]}})


def load(ref: dict[str, Any], limits: ReadLimits | None = None) -> dict[str, list[Any]]:
    study = spec(ref)
    assert study.data.train is not None
    return load_ref(study.data.train, "data.train", TASKS["scored_pairs"], study.data, _no_files, limits)


def _no_files(ref: DataRef) -> Path:
    raise AssertionError("a hub reference never resolves to a local path")


def refused(ref: dict[str, Any], limits: ReadLimits | None = None, field_: str = "data.train.hf") -> str:
    with pytest.raises(InvalidInput) as err:
        load(ref, limits)
    assert err.value.field == field_, err.value.field
    assert MARKER not in err.value.message
    return err.value.message


# ---------------------------------------------------------------- the good repositories


def test_a_hub_layout_repository_loads_each_split_and_scores_right(hub: FakeHub) -> None:
    """No card: the hub's sharded layout picks each split's Parquet files; scores are rescaled as an upload's."""
    hub.repo("org/good", {"data/train-00000-of-00002.parquet": parquet_bytes(ROWS[:4]),
                          "data/train-00001-of-00002.parquet": parquet_bytes(ROWS[4:]),
                          "data/validation-00000-of-00001.parquet": parquet_bytes(ROWS[:2]),
                          ".gitattributes": b"*.parquet filter=lfs\n"})
    data = build_datasets(spec({"hf": "org/good", "split": "train"}, {"hf": "org/good", "split": "validation"}),
                          _no_files)
    assert data.train["sentence1"] == [r["sentence1"] for r in ROWS]
    assert data.train["score"] == pytest.approx([r["score"] / 5 for r in ROWS])
    assert data.eval["sentence2"] == [r["sentence2"] for r in ROWS[:2]]


def test_a_card_with_relative_patterns_loads_its_csv_files(hub: FakeHub) -> None:
    card = {"configs": [{"config_name": "pairs", "default": True, "data_dir": "pairs",
                         "data_files": [{"split": "train", "path": ["train-*.csv", "./extra/*.csv"]},
                                        {"split": "test", "path": "test.csv"}]},
                        {"config_name": "other", "data_files": "other/*.csv"}]}
    hub.repo("org/card", {"pairs/train-1.csv": csv_bytes(ROWS[:3]), "pairs/extra/more.csv": csv_bytes(ROWS[3:]),
                          "pairs/test.csv": csv_bytes(ROWS[:1]), "other/x.csv": csv_bytes(ROWS[:2])}, card)
    assert sorted(load({"hf": "org/card", "split": "train"})["sentence1"]) == sorted(r["sentence1"] for r in ROWS)
    assert len(load({"hf": "org/card", "split": "test", "config": "pairs"})["score"]) == 1
    assert len(load({"hf": "org/card", "split": "train", "config": "other"})["score"]) == 2
    assert "no split 'validation'" in refused({"hf": "org/card", "split": "validation"})
    assert "no config 'nope'" in refused({"hf": "org/card", "split": "train", "config": "nope"})


# ---------------------------------------------------------------- a card that names what is not the repository's


def _entry(kind: str, secret: Path, url: str) -> tuple[str, str]:
    """A card entry of each kind that is not the repository's, and the kind the refusal names."""
    return {
        "absolute": (str(secret), "an absolute path"),
        "loopback-url": (f"{url}/secret.csv", "a URL"),
        "https-url": (f"{url.replace('http', 'https')}/secret.csv", "a URL"),
        "hf-url": ("hf://datasets/org/other/secret.csv", "a URL"),
        "file-url": (f"file://{secret}", "a URL"),
        "chained-url": (f"zip://x.csv::{url}/a.zip", "a URL"),
        "drive": ("C:\\secret.csv", "a URL"),
        "dotdot": ("../../../../secret.csv", "'..' part"),
        "inner-dotdot": ("data/../../../../../secret.csv", "'..' part"),
        "home": ("~/secret.csv", "home folder"),
        "backslash": ("data\\..\\secret.csv", "backslash"),
    }[kind]


KINDS = ["absolute", "loopback-url", "https-url", "hf-url", "file-url", "chained-url", "drive", "dotdot",
         "inner-dotdot", "home", "backslash"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["data_files", "data_dir", "dict"])
def test_a_card_entry_outside_the_repository_is_refused_unread(hub: FakeHub, loopback: Loopback, kind: str,
                                                               where: str) -> None:
    """Every kind of entry that is not a relative path in the repository, as a data file, as a config's
    data_dir or in a split mapping, alongside a good relative file: the whole split is refused, naming the
    kind, the secret never read (its marker nowhere) and the loopback server never asked."""
    entry, expected = _entry(kind, hub.secret, loopback.url)
    config: dict[str, Any] = {"config_name": "default"}
    if where == "data_files":
        config["data_files"] = [{"split": "train", "path": ["data/train.csv", entry]}]
    elif where == "data_dir":
        config["data_dir"] = entry
    else:
        config["data_files"] = {"train": [entry]}
    hub.repo("org/evil", {"data/train.csv": csv_bytes(ROWS)}, {"configs": [config]})
    message = refused({"hf": "org/evil", "split": "train"})
    assert expected in message and "org/evil" in message
    assert str(hub.secret) not in message and loopback.url not in message
    assert loopback.hits == []


def test_a_link_in_the_snapshot_that_leads_out_of_the_cache_is_refused(hub: FakeHub) -> None:
    """A snapshot entry linked (absolute or relative) to a file outside the repository's cache, named by the
    card or by the hub's layout: refused, unread."""
    hub.repo("org/linked", {"data/dev.csv": csv_bytes(ROWS)}, links={"data/train.csv": hub.secret})
    assert "leads out of the repository's cache" in refused({"hf": "org/linked", "split": "train"})
    snapshot = hub.repo("org/relative", {"data/dev.csv": csv_bytes(ROWS)},
                        {"configs": [{"config_name": "default", "data_files": {"train": "*.csv"}}]})
    (snapshot / "x.csv").symlink_to(os.path.relpath(hub.secret, snapshot))
    assert "leads out" in refused({"hf": "org/relative", "split": "train"})
    # The card itself linked out: refused before it is parsed.
    snapshot = hub.repo("org/card-link", {"data/train.csv": csv_bytes(ROWS)})
    (snapshot / "README.md").symlink_to(hub.secret)
    assert "'README.md' is a link that leads out" in refused({"hf": "org/card-link", "split": "train"})


def test_a_folder_linked_out_of_the_snapshot_is_never_entered(hub: FakeHub) -> None:
    outside = hub.secret.parent / "outside"
    outside.mkdir()
    (outside / "train.csv").write_bytes(hub.secret.read_bytes())
    hub.repo("org/dirlink", {"data/dev.csv": csv_bytes(ROWS)}, links={"data/train": outside})
    message = refused({"hf": "org/dirlink", "split": "train"})
    assert "no data files" in message


# ---------------------------------------------------------------- the upload limits


def test_the_split_is_read_with_the_upload_limits_all_files_together(hub: FakeHub) -> None:
    hub.repo("org/big", {"data/train-00000-of-00002.csv": csv_bytes(ROWS[:4]),
                         "data/train-00001-of-00002.csv": csv_bytes(ROWS[2:])})
    ref = {"hf": "org/big", "split": "train"}
    assert len(load(ref, ReadLimits(max_rows=8))["score"]) == 8
    message = refused(ref, ReadLimits(max_rows=7))  # 4 + 4 rows: each file alone would pass
    assert "more than 7 rows" in message and "STSWEEP_MAX_ROWS" in message and "together" in message
    size = sum(len(csv_bytes(r)) for r in (ROWS[:4], ROWS[2:]))
    message = refused(ref, ReadLimits(max_upload_bytes=size - 1))
    assert "STSWEEP_MAX_UPLOAD_BYTES" in message and f"{size:,} bytes" in message and "nothing was read" in message
    message = refused(ref, ReadLimits(max_decoded_bytes=100))
    assert "STSWEEP_MAX_DECODED_BYTES" in message
    message = refused(ref, ReadLimits(max_cell_bytes=5))
    assert "STSWEEP_MAX_CELL_BYTES" in message and "data/train-00000-of-00002.csv" in message


def test_parquet_limits_are_checked_before_decoding(hub: FakeHub) -> None:
    hub.repo("org/pq", {"data/train.parquet": parquet_bytes(ROWS)})
    message = refused({"hf": "org/pq", "split": "train"}, ReadLimits(max_rows=5))
    assert "declares 6 rows" in message and "STSWEEP_MAX_ROWS" in message


# ---------------------------------------------------------------- split and config are names, never paths


@pytest.mark.parametrize(("ref", "field_"), [
    ({"split": "../../secret"}, "data.train.split"),
    ({"split": "train[:10%]"}, "data.train.split"),
    ({"split": "data/*"}, "data.train.split"),
    ({"split": "train", "config": "/etc/passwd"}, "data.train.config"),
    ({"split": "train", "config": "http://127.0.0.1/x"}, "data.train.config"),
    ({"split": "train", "config": "a..b"}, "data.train.config"),
])
def test_split_and_config_cannot_smuggle_a_path_or_url(hub: FakeHub, ref: dict[str, Any], field_: str) -> None:
    """Refused at submission (the study model), and again by the worker's loader for a spec that skipped it."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        DataRef.model_validate({"hf": "org/good", **ref})
    assert err.value.errors()[0]["loc"] == (field_.rsplit(".", 1)[1],)
    unchecked = DataRef.model_construct(hf="org/good", path=None, dataset_id=None, header=True,
                                        **{"config": None, **ref})
    study = spec({"hf": "org/good", "split": "train"})
    with pytest.raises(InvalidInput) as raised:
        load_ref(unchecked, "data.train", TASKS["scored_pairs"], study.data, _no_files)
    assert raised.value.field == field_


def test_a_repository_not_in_the_cache_offline_says_so(hub: FakeHub) -> None:
    message = refused({"hf": "org/absent", "split": "train"})
    assert "not in the local hub cache" in message and "HF_HUB_OFFLINE" in message


def test_a_cache_ref_that_is_not_a_commit_is_refused(hub: FakeHub) -> None:
    hub.repo("org/badref", {"data/train.csv": csv_bytes(ROWS)})
    (hub.cache / "datasets--org--badref" / "refs" / "main").write_text("../../../..")
    assert "commit hash" in refused({"hf": "org/badref", "split": "train"})


# ---------------------------------------------------------------- online: a hub server on loopback


@dataclass
class HubServer:
    url: str
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def commit(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()


@pytest.fixture(scope="module")
def hub_server() -> Iterator[HubServer]:
    """A real HTTP server on 127.0.0.1 answering as the hub does: a repository listing (/api/datasets/ID) and
    files (/datasets/ID/resolve/COMMIT/PATH); every request is recorded, anything else is a 404."""
    state = HubServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            state.hits.append(path)
            status, body, headers = 404, b"{}", {}
            for repo_id, files in state.repos.items():
                resolve = f"/datasets/{repo_id}/resolve/{state.commit(repo_id)}/"
                if path == f"/api/datasets/{repo_id}":
                    siblings = [{"rfilename": n, "size": len(b)} for n, b in files.items()]
                    body = json.dumps({"id": repo_id, "sha": state.commit(repo_id), "siblings": siblings}).encode()
                    status = 200
                elif path.startswith(resolve) and path[len(resolve):] in files:
                    body = files[path[len(resolve):]]
                    status = 200
                    headers = {"X-Repo-Commit": state.commit(repo_id),
                               "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self.answer(False)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def online(hub: FakeHub, hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)  # HF_ENDPOINT, as read when the library loads
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hub.cache.parent / ".agent_harnesses.json"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub_server.hits.clear()
    return hub_server


def repo_requests(server: HubServer) -> list[str]:
    """The requests about repositories (huggingface_hub also asks the endpoint about itself)."""
    return [h for h in server.hits if h.startswith(("/api/datasets/", "/datasets/"))]


def card_bytes(card: dict[str, Any]) -> bytes:
    return f"---\n{yaml.safe_dump(card)}---\n".encode()


def test_online_a_repository_is_listed_then_only_the_split_files_are_downloaded(hub: FakeHub,
                                                                                 online: HubServer) -> None:
    online.repos["org/web"] = {"data/train-00000-of-00001.parquet": parquet_bytes(ROWS),
                               "data/test-00000-of-00001.parquet": parquet_bytes(ROWS[:1])}
    records = load({"hf": "org/web", "split": "train"})
    assert records["score"] == pytest.approx([r["score"] / 5 for r in ROWS])
    files = [h for h in online.hits if "/resolve/" in h]
    assert repo_requests(online)[0] == "/api/datasets/org/web"
    assert all(h.endswith("/data/train-00000-of-00001.parquet") for h in files) and files
    assert any((hub.cache / "datasets--org--web" / "blobs").iterdir())  # huggingface_hub's own cache


def test_online_a_card_naming_a_url_or_a_path_is_refused_before_any_data_file_is_fetched(
        hub: FakeHub, online: HubServer) -> None:
    for i, entry in enumerate([f"{online.url}/leak.csv", str(hub.secret), "../../leak.csv"]):
        repo_id = f"org/web-evil{i}"
        online.repos[repo_id] = {"data/train.csv": csv_bytes(ROWS),
                                 "README.md": card_bytes({"configs": [{"config_name": "default", "data_files": [
                                     {"split": "train", "path": ["data/train.csv", entry]}]}]})}
        refused({"hf": repo_id, "split": "train"})
    assert not [h for h in online.hits if "leak" in h or h.endswith("/data/train.csv")]


def test_online_the_byte_limit_is_checked_from_the_listing_before_downloading(hub: FakeHub,
                                                                            online: HubServer) -> None:
    online.repos["org/web-big"] = {"data/train.csv": csv_bytes(ROWS)}
    message = refused({"hf": "org/web-big", "split": "train"}, ReadLimits(max_upload_bytes=100))
    assert "STSWEEP_MAX_UPLOAD_BYTES" in message
    assert repo_requests(online) == ["/api/datasets/org/web-big"]


def test_the_worker_reads_hub_data_with_the_settings_upload_limit(hub: FakeHub,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """STSWEEP_MAX_UPLOAD_BYTES reaches the worker's limits (Settings.read_limits), as STSWEEP_MAX_ROWS does."""
    from service.settings import Settings

    monkeypatch.setenv("STSWEEP_MAX_UPLOAD_BYTES", "64")
    limits = Settings(_env_file=None).read_limits()  # type: ignore[call-arg]
    assert limits.max_upload_bytes == 64
    hub.repo("org/settings", {"train.csv": csv_bytes(ROWS)})
    assert "more than 64 bytes" in refused({"hf": "org/settings", "split": "train"}, limits)
