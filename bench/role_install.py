"""Installs per role (issue 9): the size of a fresh `stsweep[server]` virtualenv against `stsweep[all]`, and the
time `stsweep serve` takes from start to its first 200 on /readyz in each, side by side.

    .venv/bin/python bench/role_install.py [--runs 3]

Both virtualenvs are built from this source tree (not editable) in a temporary folder; `[all]` gets
`torch==2.13.0` first (the CPU build), as scripts/bootstrap.sh does. Needs PostgreSQL at 127.0.0.1:5432 (or
STSWEEP_TEST_ADMIN_URL); the database it creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pg  # noqa: E402


def build(where: Path, extra: str) -> tuple[Path, float]:
    src = where / "src"
    if not src.exists():
        for part in ("service", "workers", "migrations"):
            shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        for f in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / f, src / f)
    venv = where / f"venv-{extra}"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if extra == "all":
        subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, f"{src}[{extra}]"], check=True)
    return venv, time.monotonic() - t0


def size_mb(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 2**20


def serve_startup(venv: Path, env: dict[str, str]) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = subprocess.Popen([str(venv / "bin" / "stsweep"), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit(f"stsweep serve in {venv} did not come up")
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    name = pg.unique_name("stsweep_rolebench")
    url = pg.create_database(name)
    try:
        with tempfile.TemporaryDirectory(prefix="stsweep-roles-") as tmp:
            where = Path(tmp)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("STSWEEP_", "VIRTUAL_ENV"))}
            env.update(STSWEEP_DATABASE_URL=url, STSWEEP_HOME=str(where / "home"))
            rows = {}
            for extra in ("server", "all"):
                venv, built = build(where, extra)
                subprocess.run([str(venv / "bin" / "stsweep"), "db", "upgrade"], env=env, check=True,
                               capture_output=True)
                times = [serve_startup(venv, env) for _ in range(args.runs)]
                rows[extra] = (size_mb(venv), built, statistics.median(times), times)
            print(f"{'install':<10} {'venv MB':>9} {'pip s':>7} {'serve -> /readyz s (median)':>28}  runs")
            for extra, (mb, built, med, times) in rows.items():
                print(f"stsweep[{extra}]".ljust(10) + f" {mb:9.0f} {built:7.1f} {med:28.2f}  "
                      + ", ".join(f"{t:.2f}" for t in times))
            s, a = rows["server"], rows["all"]
            print(f"[server]/[all]: size {s[0] / a[0]:.2f}, serve start-up {s[2] / a[2]:.2f}")
    finally:
        pg.drop_database(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
