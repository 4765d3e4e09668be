"""The parts' boundaries (import-linter contracts in pyproject.toml) hold, and a broken one is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_every_contract_is_kept() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "BROKEN" not in result.stdout


def copy_tree(dest: Path) -> Path:
    for part in ("service", "workers", "migrations"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_an_api_module_importing_torch_breaks_a_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    (tree / "service" / "api" / "leak.py").write_text("import torch\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout
    assert "service.api is not allowed to import torch" in result.stdout


def test_sql_outside_the_store_breaks_a_contract(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    loop = tree / "workers" / "loop.py"
    loop.write_text(loop.read_text().replace("import optuna\n", "import optuna\nfrom sqlalchemy import text\n", 1))
    result = lint(tree)
    assert result.returncode == 1, result.stdout
    assert "workers is not allowed to import sqlalchemy" in result.stdout
