"""The client commands of the `stsweep` CLI, run as the installed console script against a live server (uvicorn in
a thread over the test database; no worker: finished trials are written through the queue by the test).

A YAML study is submitted, listed, shown, paused / stopped / resumed, watched until it completes, its best trial
read and pulled; data sets go up and are listed with the URL and token from a config file. Error paths: one line
on stderr starting with `error:`, the right exit code (1 error, 2 usage), never a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.store import queue
from service.client.config import DEFAULT_URL, ClientConfigError, config_path, resolve
from service.context import Context

STSWEEP = Path(sys.executable).parent / "stsweep"
STUDY_ID = re.compile(r"^st_[0-9a-f]{16}$")

STUDY_YAML = """\
# A small sweep: the learning rate is searched, the rest fixed.
name: cli-study          # shown by `stsweep ls`
task: scored_pairs
data:
  train: {path: stsb/train.jsonl}
  eval: {path: stsb/dev.jsonl}
  score_range: [0, 5]
search_space:
  learning_rate: {distribution: float, low: 1e-6, high: 1e-4, log: true}   # YAML 1.2 floats
  per_device_train_batch_size: 16
  weight_decay: 1e-2
budget:
  n_trials: 2
  max_concurrent_trials: 2
"""

PAIRS = [{"sentence1": f"a man plays guitar {i}", "sentence2": f"someone plays music {i}", "score": i % 6}
         for i in range(12)]


# ---------------------------------------------------------------- a live server and the console script


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


@pytest.fixture
def cli_env(server: str, token: str, tmp_path: Path) -> dict[str, str]:
    """The environment a user's shell would have: URL and token exported, an empty home (no config file)."""
    home = tmp_path / "userhome"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(HOME=str(home), COLUMNS="200", NO_COLOR="1", TERM="dumb", STSWEEP_URL=server, STSWEEP_TOKEN=token)
    return env


def stsweep(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STSWEEP), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert r.returncode == code, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def api(server: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def model_folder(root: Path) -> Path:
    """A small stand-in for a saved SentenceTransformer folder."""
    (root / "1_Pooling").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "x"}]')
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (root / "model.safetensors").write_bytes(os.urandom(4096))
    return root


def finish_next_trial(ctx: Context, value: float, folder: Path | None) -> int:
    """What a worker would do: claim the next trial, give it parameters, finish it (with a checkpoint)."""
    got = queue.claim(ctx.sessions, None, 30)
    assert got is not None
    claim, study_id = got
    queue.set_params(ctx.sessions, claim.lease, {"learning_rate": 3e-5 * (claim.number + 1), "loss": "CoSENTLoss"},
                     claim.number)
    info = ctx.artifacts.put_dir(f"studies/{study_id}/trials/{claim.number}/final.tar", folder) if folder else None
    queue.finish(ctx.sessions, claim.lease, queue.Finish(
        state="complete", value=value, metrics={"spearman_cosine": value},
        checkpoint_key=info.key if info else None, checkpoint_sha256=info.sha256 if info else None,
        checkpoint_bytes=info.size if info else None), pause_after_streak=3)
    return claim.number


# ---------------------------------------------------------------- the happy path


def test_submit_ls_status_control_watch_best_pull(cli_env: dict[str, str], server: str, token: str, ctx: Context,
                                                  data_root: Path, tmp_path: Path) -> None:
    write_jsonl(data_root / "stsb" / "train.jsonl", PAIRS)
    write_jsonl(data_root / "stsb" / "dev.jsonl", PAIRS[:6])
    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY_YAML)

    study_id = ok(stsweep("submit", str(study_file), env=cli_env)).strip()
    assert STUDY_ID.fullmatch(study_id), study_id
    with api(server, token) as http:
        spec = http.get(f"/v1/studies/{study_id}").json()["spec"]
    assert spec["search_space"]["learning_rate"]["low"] == 1e-6  # a number, not the string "1e-6"
    assert spec["search_space"]["weight_decay"] == 0.01

    listing = ok(stsweep("ls", env=cli_env))
    row = next(line for line in listing.splitlines() if study_id in line)
    assert "cli-study" in row and "queued" in row and "0/2" in row

    shown = ok(stsweep("status", study_id, env=cli_env))
    assert "cli-study" in shown and "0/2 finished" in shown
    assert [line.split()[:3] for line in shown.splitlines() if line.split()[:1] in (["0"], ["1"])] == [
        ["0", "queued", "-"], ["1", "queued", "-"]]

    one_line_error(stsweep("best", study_id, env=cli_env), 1, study_id, "no finished trial")

    def status_via_api() -> str:
        with api(server, token) as http:
            return str(http.get(f"/v1/studies/{study_id}").json()["status"])

    assert ok(stsweep("pause", study_id, env=cli_env)).strip() == f"{study_id}: paused"
    assert status_via_api() == "paused"
    assert ok(stsweep("stop", study_id, env=cli_env)).strip() == f"{study_id}: stopped"
    assert status_via_api() == "stopped"
    ok(stsweep("resume", study_id, env=cli_env))
    assert status_via_api() in ("queued", "running")

    # Ctrl-C leaves a watch cleanly: exit 130, no traceback.
    # Ctrl-C reaches it as in a terminal, even when this run's own SIGINT is ignored (a background job of a
    # non-interactive shell starts with SIGINT ignored, and a child inherits that).
    watcher = subprocess.Popen([str(STSWEEP), "status", study_id, "--watch"], env=cli_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert watcher.stdout is not None and study_id in watcher.stdout.readline()  # watching now
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 130 and "Traceback" not in err and not err.strip(), err

    # A worker finishes trial 0; `status --watch` follows the study until trial 1 completes it.
    assert finish_next_trial(ctx, 0.8125, model_folder(tmp_path / "trial0")) == 0
    watcher = subprocess.Popen([str(STSWEEP), "status", study_id, "--watch", "--interval", "0.3"], env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert watcher.poll() is None, watcher.communicate()
        finish_next_trial(ctx, 0.7, None)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, (out, err)
    assert "Traceback" not in err
    assert "completed" in out and "2/2 finished" in out
    table = [line.split() for line in out.splitlines()]
    assert ["0", "complete", "0.8125", "1"] == next(r for r in table if r[:2] == ["0", "complete"])[:4]
    assert any(r[:3] == ["1", "complete", "0.7000"] for r in table)
    assert "lr=3e-05" in out

    best = json.loads(ok(stsweep("best", study_id, "--json", env=cli_env)))
    assert best["trial_number"] == 0 and best["value"] == 0.8125 and best["metric"] == "spearman_cosine"
    assert best["params"]["learning_rate"] == 3e-5

    pulled = stsweep("pull", study_id, "-o", str(tmp_path / "models" / "best"), env=cli_env)
    folder = Path(ok(pulled).strip())
    assert folder == (tmp_path / "models" / "best").resolve()
    assert (folder / "config.json").read_text() == '{"hidden_size": 8}' and (folder / "README.md").is_file()
    assert f"SentenceTransformer({str(folder)!r})" in pulled.stderr

    # The server says no: a completed study cannot be stopped.
    one_line_error(stsweep("stop", study_id, env=cli_env), 1, "cannot stop a study that is completed")
    assert best["winner"] == {"params": best["params"], "mean": 0.8125, "std": None, "runs": 1,
                              "trial_numbers": [0]}

    # More trials for the completed study: it runs again.
    extended = ok(stsweep("extend", study_id, "1", env=cli_env)).strip()
    assert extended == f"{study_id}: running, budget 3 trials (2 finished, +1)"
    assert status_via_api() == "running"
    assert stsweep("extend", study_id, "0", env=cli_env).returncode == 2


# ---------------------------------------------------------------- errors


def test_error_paths_are_one_line_with_the_right_exit_code(cli_env: dict[str, str], server: str, token: str,
                                                           tmp_path: Path, data_root: Path) -> None:
    invalid = STUDY_YAML.replace("low: 1e-6", "low: 0")
    (tmp_path / "invalid.yaml").write_text(invalid)
    (tmp_path / "broken.yaml").write_text("name: [cli-study\n")
    (tmp_path / "missing-data.yaml").write_text(STUDY_YAML)  # valid, but no stsb/ files under the data root
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"

    calls: dict[str, tuple[list[str], dict[str, str]]] = {
        "invalid": (["submit", str(tmp_path / "invalid.yaml")], cli_env),
        "broken": (["submit", str(tmp_path / "broken.yaml")], cli_env),
        "refused": (["submit", str(tmp_path / "missing-data.yaml")], cli_env),
        "unknown": (["status", "st_0123456789abcdef"], cli_env),
        "token": (["ls"], {**cli_env, "STSWEEP_TOKEN": "sts_not-a-real-token"}),
        "down": (["ls"], {**cli_env, "STSWEEP_URL": down}),
        "flag": (["ls", "--no-such-flag"], cli_env),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {k: pool.submit(stsweep, *args, env=env) for k, (args, env) in calls.items()}
        r = {k: f.result() for k, f in futures.items()}

    # Validated locally, worded exactly like the API's 422.
    line = one_line_error(r["invalid"], 2)
    assert line == "error: search_space.learning_rate: a log-scaled distribution needs low > 0"
    import yaml

    with api(server, token) as http:
        answer = http.post("/v1/studies", json=yaml.safe_load(invalid.replace("1e-4", "0.0001")))
        assert answer.status_code == 422
        assert line == f"error: {answer.json()['error']['message']}"
        assert http.get("/v1/studies").json()["total"] == 0  # nothing was sent

    one_line_error(r["broken"], 2, "broken.yaml", "invalid YAML at line 2")
    one_line_error(r["refused"], 1, "data.train.path", "stsb/train.jsonl")
    one_line_error(r["unknown"], 1, "st_0123456789abcdef", "not found")
    one_line_error(r["token"], 1, "token", "STSWEEP_TOKEN")
    one_line_error(r["down"], 1, "cannot reach", down)
    assert r["flag"].returncode == 2 and "Traceback" not in r["flag"].stderr
    assert "--no-such-flag" in r["flag"].stderr


# ---------------------------------------------------------------- data sets, with a config file


def test_datasets_upload_and_ls_with_a_config_file(cli_env: dict[str, str], server: str, token: str,
                                                   tmp_path: Path) -> None:
    config = tmp_path / "stsweep.toml"
    config.write_text(f'# written by hand\nurl = "{server}"\ntoken = "{token}"\n')
    env = {k: v for k, v in cli_env.items() if k not in ("STSWEEP_URL", "STSWEEP_TOKEN")}
    env["STSWEEP_CONFIG"] = str(config)
    rows = [{"s1": r["sentence1"], "s2": r["sentence2"], "label": r["score"]} for r in PAIRS]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)

    up = stsweep("datasets", "upload", str(data), "--task", "scored_pairs",
                 "--columns", '{"sentence1": "s1", "sentence2": "s2", "score": "label"}', "--score-range", "0,5",
                 env=env)
    dataset_id = ok(up).strip()
    assert re.fullmatch(r"ds_[0-9a-f]{16}", dataset_id), up.stdout
    assert "12 rows" in up.stderr

    listing = ok(stsweep("datasets", "ls", env=env))
    row = next(line for line in listing.splitlines() if dataset_id in line)
    assert "pairs.jsonl" in row and "jsonl" in row and "12" in row


# ---------------------------------------------------------------- where the URL and token come from


def test_config_precedence_flags_then_env_then_file_then_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('url = "http://file:1"\ntoken = "from-file"\nunknown = 1\n')
    env = {"STSWEEP_CONFIG": str(config), "STSWEEP_URL": "http://env:2", "STSWEEP_TOKEN": "from-env"}

    cfg = resolve("http://flag:3/", "from-flag", env)
    assert (cfg.url, cfg.token, cfg.url_source, cfg.token_source) == ("http://flag:3", "from-flag", "--url", "--token")
    cfg = resolve(None, None, env)
    assert (cfg.url, cfg.token, cfg.token_source) == ("http://env:2", "from-env", "STSWEEP_TOKEN")
    cfg = resolve(None, None, {"STSWEEP_CONFIG": str(config), "STSWEEP_URL": ""})
    assert (cfg.url, cfg.token, cfg.url_source) == ("http://file:1", "from-file", str(config))
    cfg = resolve(None, "t", {"STSWEEP_CONFIG": str(tmp_path / "absent.toml"), "STSWEEP_URL": "http://env:2"})
    assert (cfg.url, cfg.token) == ("http://env:2", "t")  # the file is not read when nothing is missing

    assert config_path({}) == config_path({"STSWEEP_CONFIG": ""}) == Path.home() / ".config/stsweep/config.toml"

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    cfg = resolve(None, None, {"STSWEEP_CONFIG": str(empty)})
    assert (cfg.url, cfg.token, cfg.url_source) == (DEFAULT_URL, None, "default")

    (tmp_path / "bad.toml").write_text("url = \n")
    for bad, needle in ((tmp_path / "absent.toml", "does not exist"), (tmp_path / "bad.toml", "not valid TOML")):
        with pytest.raises(ClientConfigError, match=needle):
            resolve(None, None, {"STSWEEP_CONFIG": str(bad)})
    with pytest.raises(ClientConfigError, match="http"):
        resolve("ftp://x", None, {"STSWEEP_CONFIG": str(empty)})
