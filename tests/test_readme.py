"""The README cannot rot: its commands parse, its study file validates, its settings exist, its Python runs,
and its first command (the demo) runs a real sweep on the embedded database."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import Settings
from service.core.spec import StudySpec
from service.client.study_files import parse_study_text
from tests.cli_args import check_cli_args
from tests.conftest import ROOT
from tests.pairs import write_jsonl

README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def stsweep_lines() -> list[list[str]]:
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("stsweep "):
                lines.append(shlex.split(command)[1:])
    return lines


def test_the_two_setup_commands_exist_and_ci_runs_the_test_one() -> None:
    first = blocks("bash")[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["./scripts/demo", "./scripts/test"]
    assert os.access(ROOT / "scripts" / "demo", os.X_OK) and os.access(ROOT / "scripts" / "test", os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("args", stsweep_lines(), ids=lambda a: " ".join(a[:2]))
def test_every_cli_example_is_a_valid_command_line(args: list[str]) -> None:
    check_cli_args(args, "README")


def test_the_example_study_file_is_valid_and_covers_every_field() -> None:
    text = (ROOT / "examples" / "study.yaml").read_text(encoding="utf-8")
    spec = StudySpec.model_validate(parse_study_text(text, "examples/study.yaml", is_json=False))
    assert spec.evaluation.every_n_examples == 256
    for name in StudySpec.model_fields:
        assert re.search(rf"^{name}:", text, re.M), f"examples/study.yaml does not show {name}"


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"STSWEEP_{name.upper()}" in README, f"README does not document STSWEEP_{name.upper()}"


def test_the_python_client_example_runs(live_server: str, token: str, data_root: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (data_root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        write_jsonl(data_root / "stsb" / f"{split}.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 2.5}])
    monkeypatch.chdir(ROOT)
    (code,) = blocks("python")
    namespace = {"STSWEEP_URL": live_server, "STSWEEP_TOKEN": token}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["study"].status == "queued"


@pytest.mark.slow
def test_the_demo_command_on_a_small_budget_with_the_embedded_database(tmp_path: Path,
                                                                       embedded_home: Path) -> None:
    """`stsweep demo` (what ./scripts/demo runs) with no STSWEEP_DATABASE_URL: embedded PostgreSQL, API,
    worker, upload, sweep, pull; the pulled folder loads and embeds."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
    env.update(STSWEEP_HOME=str(embedded_home), HF_HUB_OFFLINE="1", COLUMNS="120")
    out = tmp_path / "model"
    stsweep = Path(sys.executable).with_name("stsweep")
    r = subprocess.run([str(stsweep), "demo", "--trials", "2", "--max-train-samples", "96", "--every-n-examples",
                        "48", "--port", str(port), "-o", str(out)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "vs baseline" in r.stdout and "test split" in r.stdout
    assert_quiet(r.stdout + r.stderr)
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
    assert (embedded_home / "pgdata").is_dir(), "the embedded database was used"
    from sentence_transformers import SentenceTransformer

    embedding = SentenceTransformer(str(out)).encode(["a quick check"])
    assert embedding.shape == (1, 384)
    assert not _postgres_running_in(embedded_home / "pgdata"), "the embedded server stopped with the demo"


PGSERVER_NOISE = ("pgserver", "pg_ctl", "Running commandline", "with kwargs", "Successful postgres command")


def assert_quiet(output: str) -> None:
    """No embedded-PostgreSQL chatter (pg_ctl command lines, empty stdout/stderr blocks) reaches the user."""
    noisy = [line for line in output.splitlines() if any(n in line for n in PGSERVER_NOISE)]
    assert not noisy, noisy[:5]


def _postgres_running_in(datadir: Path) -> bool:
    pid_file = datadir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
