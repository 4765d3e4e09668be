"""Installs per role: a fresh virtualenv with only `stsweep[server]` (no torch) migrates, serves and takes a study
against real PostgreSQL; one with only `stsweep[client]` submits, lists and shows a study against a live server.
Commands of a missing extra exit 2 with one line naming the extra. (pip fetches from the package index, or its
cache: a minute or two.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.studyspecs import contract_study
from tests.test_cli import STUDY_YAML, PAIRS, write_jsonl

pytestmark = pytest.mark.install


def build_venv(where: Path, extra: str) -> Path:
    """A virtualenv with `stsweep[extra]` installed (not editable) from a copy of this source tree."""
    src = where / "src"
    for part in ("service", "workers", "migrations"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    venv = where / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"{src}[{extra}]"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in r.stderr, r.stderr[-3000:]
    return venv


def role_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STSWEEP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(HOME=str(home), STSWEEP_HOME=str(home / ".stsweep"), COLUMNS="200", NO_COLOR="1", **extra)
    return env


def run(venv: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], env=env, capture_output=True, text=True,
                          timeout=180)


def assert_cannot_import(venv: Path, env: dict[str, str], *modules: str) -> None:
    for module in modules:
        r = run(venv, "python", "-c", f"import {module}", env=env)
        assert r.returncode != 0 and f"No module named '{module}'" in r.stderr, (module, r.stderr)


def assert_needs_extra(venv: Path, env: dict[str, str], args: list[str], extra: str) -> None:
    r = run(venv, "stsweep", *args, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.returncode, r.stdout, r.stderr)
    assert f"stsweep[{extra}]" in lines[0] and "Traceback" not in r.stderr + r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_extra_without_torch_migrates_serves_and_takes_a_study(tmp_path: Path, empty_database: str) -> None:
    venv = build_venv(tmp_path, "server")
    home = tmp_path / "home"
    data_root = tmp_path / "data"
    write_jsonl(data_root / "stsb" / "train.jsonl", PAIRS)
    write_jsonl(data_root / "stsb" / "dev.jsonl", PAIRS[:6])
    write_jsonl(data_root / "stsb" / "test.jsonl", PAIRS[:6])
    env = role_env(home, STSWEEP_DATABASE_URL=empty_database, STSWEEP_DATA_ROOT=str(data_root),
                   STSWEEP_ARTIFACT_ROOT=str(tmp_path / "artifacts"))
    assert_cannot_import(venv, env, "torch", "sentence_transformers", "transformers")
    assert_needs_extra(venv, env, ["worker"], "worker")

    assert run(venv, "stsweep", "db", "upgrade", env=env).returncode == 0
    token = run(venv, "stsweep", "token", "create", "--name", "role-test", env=env).stdout.strip()
    assert token.startswith("sts_")
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "stsweep"), "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "stsweep serve never became ready"
            time.sleep(0.3)
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{url}/v1/studies", json=contract_study(), headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        study = httpx.get(f"{url}/v1/studies/{created.json()['id']}", headers=headers, timeout=30).json()
        assert study["status"] == "queued" and study["counts"]["queued"] == 20
    finally:
        server.terminate()
        server.wait(30)


def test_client_extra_submits_lists_and_shows_against_a_live_server(tmp_path: Path, live_server: str, token: str,
                                                                    data_root: Path) -> None:
    venv = build_venv(tmp_path, "client")
    write_jsonl(data_root / "stsb" / "train.jsonl", PAIRS)
    write_jsonl(data_root / "stsb" / "dev.jsonl", PAIRS[:6])
    env = role_env(tmp_path / "home", STSWEEP_URL=live_server, STSWEEP_TOKEN=token)
    assert_cannot_import(venv, env, "torch", "fastapi", "sqlalchemy", "optuna")
    assert_needs_extra(venv, env, ["serve"], "server")
    assert_needs_extra(venv, env, ["worker"], "worker")

    study_file = tmp_path / "study.yaml"
    study_file.write_text(STUDY_YAML)
    submitted = run(venv, "stsweep", "submit", str(study_file), env=env)
    assert submitted.returncode == 0, submitted.stderr
    study_id = submitted.stdout.strip()
    listed = run(venv, "stsweep", "ls", env=env)
    assert listed.returncode == 0 and study_id in listed.stdout and "cli-study" in listed.stdout, listed.stderr
    shown = run(venv, "stsweep", "status", study_id, env=env)
    assert shown.returncode == 0 and study_id in shown.stdout and "queued" in shown.stdout, shown.stderr
