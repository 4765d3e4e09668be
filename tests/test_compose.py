"""docker-compose.yml and the Dockerfile, checked without Docker: every stsweep command a service runs exists in
the CLI (subcommands, options and their values), every STSWEEP_* variable is a real setting, and the
deployment's wiring (migrate first, a scalable GPU worker, artifacts in the S3 service, pinned images) is as
documented."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.cli_args import check_cli_args
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SETTINGS_VARS = {f"STSWEEP_{name.upper()}" for name in Settings.model_fields}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """What Compose makes of a value when none of the variables is set: `${X:-default}` -> default."""
    def sub(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3) or ""
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise AssertionError(f"${{{m.group(1)}}} is required: the file must work with its defaults")
        return ""

    return INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# ----------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Each `FROM ... AS name` stage: its base, RUN commands, ENV, USER and ENTRYPOINT / CMD (JSON form)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m and m.group(2), f"every stage should be named: {line!r}"
            current = stages[m.group(2)] = {"base": m.group(1), "RUN": [], "ENV": {}, "USER": None}
        elif instruction == "RUN" and current is not None:
            current["RUN"].append(rest)
        elif instruction == "ENV" and current is not None:
            current["ENV"].update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif instruction == "USER" and current is not None:
            current["USER"] = rest.strip()
        elif instruction in ("ENTRYPOINT", "CMD") and current is not None:
            current[instruction] = yaml.safe_load(rest)  # the JSON (exec) form is a YAML flow list
            assert isinstance(current[instruction], list), f"{instruction} should use the exec form: {line!r}"
    return stages


def image_entrypoint(target: str) -> list[str]:
    stages = dockerfile_stages()
    stage = stages[target]
    while "ENTRYPOINT" not in stage and stage["base"] in stages:  # inherited from a stage it builds on
        stage = stages[stage["base"]]
    return stage.get("ENTRYPOINT", [])


def test_dockerfile_has_api_and_worker_targets_running_stsweep() -> None:
    stages = dockerfile_stages()
    assert {"api", "worker"} <= set(stages)
    for target in ("api", "worker"):
        assert image_entrypoint(target) == ["stsweep"], target
        assert "CMD" in stages[target], target
        check_cli_args(stages[target]["CMD"], f"Dockerfile {target} CMD")
    runs = {target: " ".join(stages[target]["RUN"]) for target in ("api", "worker")}
    assert "torch" not in runs["api"] and "[server]" in runs["api"], "the api image: stsweep[server], no torch"
    # The CUDA build of torch (pip's default index), then stsweep[worker]; the NVIDIA runtime's driver libraries.
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}"', runs["worker"]) and "[worker]" in runs["worker"]
    assert "--index-url" not in runs["worker"] and "+cpu" not in runs["worker"], "not the CPU build of torch"
    assert "compute" in stages["worker"]["ENV"].get("NVIDIA_DRIVER_CAPABILITIES", "")


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("args", [
    ["nope"], ["db"], ["db", "upgrad"], ["serve", "--prot", "8000"], ["serve", "--port", "http"], ["worker", "--gpus"],
])
def test_the_command_check_rejects_what_the_cli_would(args: list[str]) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        check_cli_args(args, "example")


def service_argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint")
    if entrypoint is None and "build" in service:
        build = service["build"]
        target = build.get("target") if isinstance(build, dict) else None
        assert target, "services built here should name a Dockerfile target"
        entrypoint = image_entrypoint(target)
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    command = service.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    return [interpolate(str(a)) for a in [*(entrypoint or []), *command]]


@pytest.mark.parametrize(("name", "expected"), [
    ("migrate", ["db", "upgrade"]),
    ("api", ["serve"]),
    ("worker", ["worker"]),
])
def test_each_service_runs_a_real_stsweep_command(services: dict[str, Any], name: str, expected: list[str]) -> None:
    argv = service_argv(services[name])
    assert argv[0] == "stsweep", f"{name} runs {argv}"
    assert argv[1:1 + len(expected)] == expected
    check_cli_args(argv[1:], name)


def test_every_stsweep_command_in_the_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        argv = service_argv(service)
        if argv[:1] == ["stsweep"]:
            check_cli_args(argv[1:], name)


def test_api_listens_where_it_is_published_and_its_healthcheck_exists(services: dict[str, Any]) -> None:
    api = services["api"]
    argv = service_argv(api)
    port = argv[argv.index("--port") + 1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    published = [interpolate(str(p)) for p in api["ports"]]
    assert published == [f"127.0.0.1:8000:{port}"], "by default the API is published on 127.0.0.1 only"
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in check
    from service.api.routes_health import router

    assert "/healthz" in {route.path for route in router.routes}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ variables


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_every_stsweep_variable_is_a_setting() -> None:
    """Also those in comments (the S3 alternatives), so a renamed setting cannot leave a dead example."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    named = set(re.findall(r"\bSTSWEEP_[A-Z0-9_]+", text))
    assert "STSWEEP_DATABASE_URL" in named
    assert named <= SETTINGS_VARS, f"not fields of service.settings.Settings: {sorted(named - SETTINGS_VARS)}"
    assert {"STSWEEP_S3_ENDPOINT_URL", "STSWEEP_S3_ACCESS_KEY_ID", "STSWEEP_S3_SECRET_ACCESS_KEY"} <= named


def test_settings_accept_the_services_environment(services: dict[str, Any]) -> None:
    for name in ("migrate", "api", "worker"):
        env = {k: interpolate(v) for k, v in environment(services[name]).items() if k.startswith("STSWEEP_")}
        settings = Settings(_env_file=None, **{k.removeprefix("STSWEEP_").lower(): v for k, v in env.items()})
        assert settings.database_url, name


def test_database_url_points_at_the_postgres_service(services: dict[str, Any]) -> None:
    """Migrations go to postgres directly; the API and the workers through the pgbouncer service, in transaction
    pool mode, which reaches the same database with the same credentials."""
    pg_env = {k: interpolate(v) for k, v in environment(services["postgres"]).items()}
    credentials = (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])
    for name, host in (("migrate", "postgres"), ("api", "pgbouncer"), ("worker", "pgbouncer")):
        url = make_url(interpolate(environment(services[name])["STSWEEP_DATABASE_URL"]))
        assert (url.host, url.port or 5432) == (host, 5432), name
        assert (url.username, url.password, url.database) == credentials, name
    bouncer = services["pgbouncer"]
    bouncer_env = {k: interpolate(v) for k, v in environment(bouncer).items()}
    upstream = make_url(bouncer_env["DATABASE_URL"])
    assert (upstream.host, upstream.port) == ("postgres", 5432)
    assert (upstream.username, upstream.password, upstream.database) == credentials
    assert bouncer_env["POOL_MODE"] == "transaction"
    # PostgreSQL 16 stores SCRAM verifiers: PgBouncer must hold the password itself to log in with it.
    assert bouncer_env["AUTH_TYPE"] == "scram-sha-256"
    assert int(bouncer_env["DEFAULT_POOL_SIZE"]) < 100 <= int(bouncer_env["MAX_CLIENT_CONN"])
    assert bouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(bouncer["healthcheck"]["test"])
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["pgbouncer"]["condition"] == "service_healthy", name


# ----------------------------------------------------------------------------------------------- the wiring


def test_services_exist(services: dict[str, Any]) -> None:
    assert {"postgres", "pgbouncer", "s3", "s3-init", "migrate", "api", "worker"} <= set(services)


def test_postgres_has_a_volume_and_a_pg_isready_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    mounts = {m.target: m.source for m in mounts_of(postgres)}
    assert mounts.get("/var/lib/postgresql/data") in compose.get("volumes", {})


def test_migrate_runs_once_before_the_api_and_workers(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(services["migrate"].get("restart", "no")) == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_worker_reserves_an_nvidia_gpu_and_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") in (1, "all")
               for d in devices), devices
    assert "container_name" not in worker and "ports" not in worker
    argv = service_argv(worker)
    assert argv[argv.index("--gpus") + 1] == "all"


class Mount:
    def __init__(self, source: str, target: str, read_only: bool) -> None:
        self.source, self.target, self.read_only = source, target, read_only


def mounts_of(service: dict[str, Any]) -> list[Mount]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append(Mount(interpolate(str(v.get("source", ""))), v["target"], bool(v.get("read_only"))))
        else:
            parts = interpolate(v).split(":")
            out.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def test_api_and_worker_keep_artifacts_in_the_s3_service(compose: dict[str, Any]) -> None:
    """One bucket on the MinIO service, reached with its root keys, created before the API and workers start;
    no artifact volume is shared (a worker on another host has only PostgreSQL and S3)."""
    services = compose["services"]
    s3 = services["s3"]
    s3_env = {k: interpolate(v) for k, v in environment(s3).items()}
    assert service_argv(s3)[:2] == ["server", "/data"] and "--address" not in service_argv(s3)  # the API on :9000
    assert "mc ready local" in " ".join(s3["healthcheck"]["test"][1:])
    assert {m.target: m.source for m in mounts_of(s3)}["/data"] in compose["volumes"]
    init = services["s3-init"]
    init_env = {k: interpolate(v) for k, v in environment(init).items()}
    script = interpolate(" ".join(init["command"]))
    assert 'mc mb --ignore-existing "stsweep/$S3_BUCKET"' in script and 'mc alias set stsweep "$S3_ENDPOINT_URL"' in script
    assert init["depends_on"]["s3"]["condition"] == "service_healthy" and str(init.get("restart")) == "no"
    for name in ("api", "worker"):
        env = {k: interpolate(v) for k, v in environment(services[name]).items()}
        bucket, _, prefix = env["STSWEEP_ARTIFACT_ROOT"].removeprefix("s3://").partition("/")
        assert env["STSWEEP_ARTIFACT_ROOT"].startswith("s3://") and prefix, name
        assert bucket == init_env["S3_BUCKET"], name
        endpoint = urlsplit(env["STSWEEP_S3_ENDPOINT_URL"])
        assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "s3", 9000), name
        assert env["STSWEEP_S3_ENDPOINT_URL"] == init_env["S3_ENDPOINT_URL"], name
        assert (env["STSWEEP_S3_ACCESS_KEY_ID"], env["STSWEEP_S3_SECRET_ACCESS_KEY"]) == (
            s3_env["MINIO_ROOT_USER"], s3_env["MINIO_ROOT_PASSWORD"]) == (
            init_env["S3_ACCESS_KEY_ID"], init_env["S3_SECRET_ACCESS_KEY"]), name
        assert len(s3_env["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses a root password under 8 characters"
        assert services[name]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully", name
        assert not [m for m in mounts_of(services[name]) if "artifacts" in m.target], name
        settings = Settings(_env_file=None, **{k.removeprefix("STSWEEP_").lower(): v for k, v in env.items()
                                               if k.startswith("STSWEEP_")})
        assert settings.artifact_location() == env["STSWEEP_ARTIFACT_ROOT"], name


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    """A tag on every image, never `latest`; ours default to the project's version."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for name, service in compose["services"].items():
        image = interpolate(str(service["image"]))
        repository, _, tag = image.rpartition("/")[2].partition(":")
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        if repository in ("stsweep-api", "stsweep-worker"):
            assert tag == version, f"{name}: {image}"
    assert re.fullmatch(r"postgres:\d+\.\d+", interpolate(compose["services"]["postgres"]["image"]))
    assert re.fullmatch(r"(minio/minio|minio/mc):RELEASE\.[0-9T-]+Z", interpolate(compose["services"]["s3"]["image"]))


def test_api_and_worker_see_the_data_root_at_the_same_path(services: dict[str, Any]) -> None:
    for name in ("api", "worker"):
        root = interpolate(environment(services[name])["STSWEEP_DATA_ROOT"])
        assert [m for m in mounts_of(services[name]) if m.target == root], f"{name}: nothing mounted at {root}"


def compose_command() -> list[str] | None:
    """The Compose plugin (`docker compose`), else Debian's `docker-compose` (scripts/test installs it)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_accepts_the_file() -> None:
    """Compose itself has the last word on the file's syntax (no daemon needed for `config`)."""
    compose = compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    result = subprocess.run([*compose, "-f", str(COMPOSE_FILE), "config", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
