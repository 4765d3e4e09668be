"""`stsweep slurm`: the sbatch script it renders, the validation of every option (exit 2, one line), secrets that
never reach the script, and the SLURM job and task of a worker in the workers view. Fast: no SLURM needed (the
real cluster is tests/test_slurm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.cli.slurm_commands import (ArrayJob, OptionError, array_job, parse_extra_sbatch, parse_time_limit,
                                        render_script, task_environment)
from service.context import Context
from service.core.scheduler import SchedulerJob, scheduler_job
from service.settings import Settings
from service.store import queue
from tests.conftest import ROOT
from tests.test_cli import one_line_error
from tests.test_dashboard_browser import browser  # noqa: F401  (the headless Chromium fixture)

STSWEEP = ROOT / ".venv" / "bin" / "stsweep"
PASSWORD = "pg-Pa55word-do-not-leak"
SECRET = "s3-SeCrEt-key-do-not-leak"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STSWEEP_", "SLURM_"))}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STSWEEP), "slurm", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def job(**overrides: object) -> ArrayJob:
    values: dict[str, object] = dict(workers="3", gpus_per_worker="2", partition=None, time_limit=None,
                                     account=None, extra_sbatch=[], job_name="stsweep-worker",
                                     output="logs/w-%A_%a.out", exit_when_idle="120", shutdown_grace_seconds=45,
                                     stsweep="/opt/venv/bin/stsweep")
    values.update(overrides)
    return array_job(**values)  # type: ignore[arg-type]


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_the_script_runs_one_worker_per_array_task_as_the_batch_shell() -> None:
    script = render_script(job(partition="gpu,gpu-long", time_limit="1-12:00:00", account="ml-team",
                               extra_sbatch=["--mem=32G -q high", '--comment="sweep 7"']))
    assert script.startswith("#!/bin/bash\n")
    assert directives(script) == [
        "--job-name=stsweep-worker", "--array=1-3", "--ntasks=1", "--gres=gpu:2", "--partition=gpu,gpu-long",
        "--account=ml-team", "--time=1-12:00:00",
        "--signal=B:TERM@55",  # the batch shell (the exec'd worker), grace 45 s + 10 s before the limit
        "--export=ALL", "--output=logs/w-%A_%a.out", "--open-mode=append", "--mem=32G", "-q high",
        '"--comment=sweep 7"']
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == "exec /opt/venv/bin/stsweep worker --gpus all --exit-when-idle 120"
    # Every #SBATCH line comes before the first command, or sbatch ignores it.
    lines = script.splitlines()
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < lines.index(commands[0])
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_a_cpu_array_without_optional_directives() -> None:
    script = render_script(job(workers="1", gpus_per_worker="0", exit_when_idle="7.5", stsweep="/a b/stsweep"))
    assert not any(d.startswith(("--gres", "--partition", "--account", "--time")) for d in directives(script))
    assert "--array=1-1" in directives(script)
    assert script.rstrip().endswith("exec '/a b/stsweep' worker --gpus none --exit-when-idle 7.5")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"workers": None}, "--workers: required"),
    ({"workers": "0"}, "--workers: must be at least 1 (got 0)"),
    ({"workers": "two"}, "--workers: expected a whole number (got 'two')"),
    ({"gpus_per_worker": "-1"}, "--gpus-per-worker: must be at least 0"),
    ({"gpus_per_worker": "1.5"}, "--gpus-per-worker: expected a whole number"),
    ({"time_limit": "2h"}, "--time: expected HH:MM:SS or D-HH:MM:SS (got '2h')"),
    ({"time_limit": "01:60:00"}, "--time: minutes and seconds go up to 59"),
    ({"time_limit": "00:00:00"}, "--time: must be longer than 00:00:00"),
    ({"time_limit": "00:00:55"}, "--time: 00:00:55 leaves no time to work: the worker's SIGTERM comes 55 s"),
    ({"partition": "gpu;rm -rf /"}, "--partition: letters, digits"),
    ({"account": "a b"}, "--account: letters, digits"),
    ({"job_name": "x\ny"}, "--job-name: letters, digits"),
    ({"output": "my logs/%A.out"}, "--output: a file name pattern without spaces"),
    ({"exit_when_idle": "0"}, "--exit-when-idle: must be a positive number"),
    ({"exit_when_idle": "soon"}, "--exit-when-idle: expected seconds"),
    ({"exit_when_idle": "inf"}, "--exit-when-idle: must be a positive number"),
    ({"extra_sbatch": ["--array=1-100"]}, "--extra-sbatch: --array is set by stsweep"),
    ({"extra_sbatch": ["--signal=USR1@60"]}, "--extra-sbatch: --signal is set by stsweep"),
    ({"extra_sbatch": ["--export=NONE"]}, "--extra-sbatch: --export is set by stsweep"),
    ({"extra_sbatch": ["mem=3G"]}, "--extra-sbatch: expected sbatch options like --mem=32G (got 'mem=3G')"),
    ({"extra_sbatch": ['--comment="open']}, "--extra-sbatch: No closing quotation"),
    ({"extra_sbatch": ["--mem=1G\n#SBATCH --array=1-9"]}, "--extra-sbatch: one line of options"),
    ({"shutdown_grace_seconds": 70000}, "STSWEEP_SHUTDOWN_GRACE_SECONDS: 70000 s is more than SLURM"),
])
def test_every_bad_option_is_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError) as raised:
        job(**overrides)
    assert str(raised.value).startswith(message), str(raised.value)


def test_time_limits_and_extra_options_parse_as_sbatch_reads_them() -> None:
    assert parse_time_limit("00:02:00") == 120
    assert parse_time_limit("1-00:00:01") == 86401
    assert parse_time_limit("100:00:00") == 360000
    assert parse_extra_sbatch(["--mem 32G --constraint=a100", "-q high"]) == ("--mem 32G", "--constraint=a100",
                                                                             "-q high")
    # Spaces, quotes and # go in double quotes with backslash escapes (tests/test_slurm.py reads one back).
    assert parse_extra_sbatch(['--comment="say \\"hi\\" #7"']) == ('"--comment=say \\"hi\\" #7"',)
    assert parse_extra_sbatch(["--comment 'a#b'"]) == ('--comment "a#b"',)


def test_dry_run_prints_the_script_without_secrets_and_bad_options_exit_2_with_one_line(tmp_path: Path) -> None:
    secrets = {"STSWEEP_DATABASE_URL": f"postgresql://sweeper:{PASSWORD}@db.internal:5432/stsweep",
               "STSWEEP_S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "STSWEEP_S3_SECRET_ACCESS_KEY": SECRET,
               "STSWEEP_ARTIFACT_ROOT": "s3://sweeps/prod", "STSWEEP_SHUTDOWN_GRACE_SECONDS": "20"}
    env = cli_env(**secrets)
    # Secrets read from a .env file are as secret as exported ones.
    (tmp_path / ".env").write_text(f"STSWEEP_S3_SECRET_ACCESS_KEY={SECRET}\n")
    bad = {
        "--workers 0": (["--workers", "0"], "--workers: must be at least 1"),
        "no --workers": ([], "--workers: required"),
        "--time 90m": (["-n", "2", "--time", "90m"], "--time: expected HH:MM:SS"),
        "--time too short": (["-n", "2", "--time", "00:00:30"], "leaves no time to work"),
        "--gpus-per-worker x": (["-n", "2", "--gpus-per-worker", "x"], "--gpus-per-worker: expected a whole"),
        "--partition": (["-n", "2", "--partition", "a b"], "--partition: letters, digits"),
        "--extra-sbatch": (["-n", "2", "--extra-sbatch", "--array=0-9"], "--extra-sbatch: --array is set"),
    }
    with ThreadPoolExecutor(4) as pool:
        dry = pool.submit(run, "submit", "--workers", "2", "--gpus-per-worker", "0", "--time", "04:00:00",
                          "--dry-run", env=env, cwd=tmp_path)
        errors = {k: pool.submit(run, "submit", *args, "--dry-run", env=env, cwd=tmp_path)
                  for k, (args, _) in bad.items()}
        ls_bad = pool.submit(run, "ls", "12x", env=env, cwd=tmp_path)
        no_db = pool.submit(run, "submit", "-n", "1", env=cli_env(), cwd=tmp_path)
        no_sbatch = pool.submit(run, "submit", "-n", "1", env={**env, "PATH": str(STSWEEP.parent)}, cwd=tmp_path)
    out = dry.result()
    assert out.returncode == 0, out.stderr
    assert "--signal=B:TERM@30" in out.stdout and "--export=ALL" in out.stdout
    assert f"exec {STSWEEP} worker --gpus none" in out.stdout
    for secret in (PASSWORD, SECRET, "AKIAEXAMPLE", "db.internal"):
        assert secret not in out.stdout + out.stderr
    for key, (_, needle) in bad.items():
        one_line_error(errors[key].result(), 2, needle)
    one_line_error(ls_bad.result(), 2, "JOB_ID: expected a SLURM job id like 1234 or 1234_5")
    one_line_error(no_db.result(), 2, "STSWEEP_DATABASE_URL is not set")
    one_line_error(no_sbatch.result(), 1, "sbatch not found on PATH")


def test_the_tasks_environment_carries_the_settings_and_secrets(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"STSWEEP_S3_SECRET_ACCESS_KEY={SECRET}\nSTSWEEP_DOCS_NEED_TOKEN=true\n")
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        settings = Settings(database_url=f"postgresql://u:{PASSWORD}@h/d", shutdown_grace_seconds=25)
    finally:
        os.chdir(here)
    env = task_environment(settings, {"PATH": "/usr/bin", "STSWEEP_HOME": "/from/the/shell"})
    assert env["STSWEEP_DATABASE_URL"] == f"postgresql://u:{PASSWORD}@h/d"
    assert env["STSWEEP_S3_SECRET_ACCESS_KEY"] == SECRET  # from .env: the tasks may start elsewhere
    assert env["STSWEEP_SHUTDOWN_GRACE_SECONDS"] == "25.0" and env["STSWEEP_DOCS_NEED_TOKEN"] == "true"
    assert env["PATH"] == "/usr/bin" and env["STSWEEP_HOME"] == "/from/the/shell"
    assert "STSWEEP_S3_REGION" not in env, "defaults are left to the tasks' own settings"


def test_the_slurm_job_of_a_process_comes_from_its_environment() -> None:
    assert scheduler_job({}) is None
    assert scheduler_job({"SLURM_JOB_ID": " "}) is None
    plain = scheduler_job({"SLURM_JOB_ID": "812"})
    assert plain == SchedulerJob("slurm", "812", None) and plain.label == "812"
    task = scheduler_job({"SLURM_JOB_ID": "815", "SLURM_ARRAY_JOB_ID": "812", "SLURM_ARRAY_TASK_ID": "3"})
    assert task == SchedulerJob("slurm", "812", "3") and task.label == "812_3"


def test_the_workers_view_names_the_slurm_job_and_task(client: TestClient, ctx: Context) -> None:
    by_hand = queue.register_worker(ctx.sessions, "laptop", 11, "cpu")
    in_slurm = queue.register_worker(ctx.sessions, "node-07", 12, "cuda:0", SchedulerJob("slurm", "812", "3"))
    items = {w["id"]: w for w in client.get("/v1/workers").json()["items"]}
    assert (items[in_slurm]["scheduler"], items[in_slurm]["scheduler_job"], items[in_slurm]["scheduler_task"]) \
        == ("slurm", "812", "3")
    assert (items[by_hand]["scheduler"], items[by_hand]["scheduler_job"], items[by_hand]["scheduler_task"]) \
        == (None, None, None)


def test_the_worker_records_its_slurm_job_at_start_up(ctx: Context, settings: Settings, tmp_path: Path) -> None:
    """A real `python -m workers` with SLURM's variables in its environment, as an array task has them."""
    from tests.workerproc import worker_env

    env = {**worker_env(settings), "SLURM_JOB_ID": "905", "SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": "2"}
    done = subprocess.run([sys.executable, "-m", "workers", "--device", "cpu", "--exit-when-idle", "0.5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "running in slurm job 900_2" in done.stderr
    from sqlalchemy import text

    from service.store.db import session_scope

    with session_scope(ctx.sessions) as s:
        row = s.execute(text("SELECT scheduler, scheduler_job, scheduler_task, status FROM workers")).one()
    assert tuple(row) == ("slurm", "900", "2", "stopped")


@pytest.mark.browser
def test_the_dashboard_shows_the_slurm_job_of_each_worker(live_server: str, browser: object, ctx: Context,
                                                         token: str) -> None:
    in_slurm = queue.register_worker(ctx.sessions, "node-07", 12, "cuda:0", SchedulerJob("slurm", "812", "3"))
    by_hand = queue.register_worker(ctx.sessions, "laptop", 11, "cpu")
    page = browser.new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/")
    page.fill("#token-input", token)
    page.click("#sign-in-button")
    page.click("nav a[data-nav='workers']")
    slurm_row = page.wait_for_selector(f"#workers-table tr[data-worker-id='{in_slurm}']")
    headers = page.locator("#workers-table thead th").all_text_contents()
    column = headers.index("Scheduler job")
    cells = slurm_row.query_selector_all("td")
    assert len(cells) == len(headers)
    assert cells[column].inner_text().split() == ["812_3", "SLURM"]
    hand_cells = page.query_selector_all(f"#workers-table tr[data-worker-id='{by_hand}'] td")
    assert hand_cells[column].inner_text().strip() == "—"
    assert errors == []
