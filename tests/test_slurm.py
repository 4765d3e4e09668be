"""Workers as a real SLURM job array: Debian's slurm-wlm on this one machine (scripts/slurm-local: munged,
slurmctld, slurmd as root), `stsweep slurm submit` and `stsweep slurm ls` as a user runs them, real training of
all-MiniLM-L6-v2 on the bundled pairs, and a real `scancel` of one array task in the middle of a trial."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.context import Context
from service.settings import Settings
from tests.conftest import ROOT
from tests.test_worker_e2e import EVERY, pair_files, row, study_body, submit, trials  # noqa: F401  (fixture)
from tests.workerproc import wait_for, worker_env

pytestmark = pytest.mark.slow

SLURM_LOCAL = ROOT / "scripts" / "slurm-local"
STSWEEP = ROOT / ".venv" / "bin" / "stsweep"
GRACE_SECONDS = 25  # the workers' shutdown grace: below SLURM's KillWait (30 s from scancel's SIGTERM to SIGKILL)


@dataclass
class Cluster:
    env: dict[str, str]  # SLURM_CONF, for sbatch / squeue / scancel
    jobs: list[str] = field(default_factory=list)  # every job submitted: cancelled at the end

    def run(self, *cmd: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(list(cmd), env={**(env or os.environ), **self.env}, cwd=cwd, capture_output=True,
                              text=True, timeout=60)
        assert not check or done.returncode == 0, f"{cmd}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def states(self, job: str) -> dict[str, str]:
        """{array task id like 12_1: state} as squeue has them (finished ones included)."""
        out = self.run("squeue", "--array", "--noheader", "--states=all", f"--jobs={job}", "--format=%i %T",
                       check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def cancel_and_wait(self, job: str, timeout: float = 60) -> None:
        self.run("scancel", job, check=False)
        wait_for(lambda: not {"RUNNING", "PENDING", "COMPLETING"} & set(self.states(job).values()), timeout,
                 f"job {job} to leave the node")


def _slurm_local(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SLURM_LOCAL), command], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    """The one-node SLURM of scripts/slurm-local, started if it is not running (and then stopped at the end)."""
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM (scripts/slurm-local) runs its daemons and jobs as root")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install slurm-wlm (scripts/test does, as root)")
    was_running = _slurm_local("status").returncode == 0
    started = _slurm_local("start")
    assert started.returncode == 0, started.stdout + started.stderr
    conf = next(line.split("=", 1)[1] for line in started.stdout.splitlines() if line.startswith("SLURM_CONF="))
    cluster = Cluster({"SLURM_CONF": conf})
    try:
        yield cluster
    finally:
        for job in cluster.jobs:
            cluster.cancel_and_wait(job)
        if not was_running:
            stopped = _slurm_local("stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _running(ctx: Context) -> list[Any]:
    from service.store.db import session_scope
    from sqlalchemy import text

    with session_scope(ctx.sessions) as s:
        return list(s.execute(text("""
            SELECT t.id, t.number, t.state, t.attempts, t.resume_examples, t.worker_id, w.scheduler_task
            FROM trials t JOIN workers w ON w.id = t.worker_id WHERE t.state = 'running' ORDER BY t.id""")))


def test_two_array_tasks_complete_a_study_and_a_cancelled_task_gives_its_trial_back(
        slurm: Cluster, client: TestClient, ctx: Context, settings: Settings, pair_files: None,  # noqa: F811
        tmp_path: Path) -> None:
    body = study_body("slurm", max_attempts=1, budget={"n_trials": 3, "max_concurrent_trials": 2})
    del body["data"]["test"]  # 192 examples, 3 evaluations of 64 each: time to cancel in the middle
    study_id = submit(client, body)
    (tmp_path / "scratch").mkdir()
    env = worker_env(settings, checkpoint_every_seconds=0, shutdown_grace_seconds=GRACE_SECONDS)
    env.update({"TMPDIR": str(tmp_path / "scratch"), "OMP_NUM_THREADS": "1"})  # one CPU per task
    name = f"stsweep-test-{uuid.uuid4().hex[:8]}"
    comment = 'say "hi" #7'

    sbatch_at = time.monotonic()
    submitted = slurm.run(str(STSWEEP), "slurm", "submit", "--workers", "2", "--gpus-per-worker", "0",
                          "--time", "00:20:00", "--exit-when-idle", "5", "--job-name", name,
                          "--output", str(tmp_path / "task-%A_%a.out"),
                          "--extra-sbatch", f"--comment='{comment}'", env=env, cwd=tmp_path)
    job = submitted.stdout.strip()
    assert job.isdigit(), submitted.stdout
    slurm.jobs.append(job)
    try:
        wait_for(lambda: _running(ctx), 120, "the first trial claimed by an array task", interval=0.1)
        first_claim_s = time.monotonic() - sbatch_at

        # Cancel one task in the middle of its trial: after its first resumable checkpoint, before its end.
        victim = wait_for(lambda: next((r for r in _running(ctx) if (r.resume_examples or 0) >= EVERY), None), 180,
                          "a trial with a resumable checkpoint")
        victim_found_s = time.monotonic() - sbatch_at
        assert victim.resume_examples < 3 * EVERY and victim.attempts == 1
        assert victim.scheduler_task in ("1", "2")
        slurm.run("scancel", f"{job}_{victim.scheduler_task}")
        cancelled_at = time.monotonic()

        seen: list[tuple[str, int, int | None]] = []

        def resumed_elsewhere() -> bool:
            t = row(ctx, "SELECT state, attempts, worker_id FROM trials WHERE id = :id", id=victim.id)
            seen.append((t.state, t.attempts, t.worker_id))
            return t.state == "running" and t.worker_id != victim.worker_id

        wait_for(resumed_elsewhere, 150, "the cancelled task's trial to run on the other task", interval=0.1)
        resumed_after_s = time.monotonic() - cancelled_at
        assert ("queued", 0, None) in seen, f"given back to the queue, no attempt used: {seen[:5]} ... {seen[-3:]}"

        wait_for(lambda: client.get(f"/v1/studies/{study_id}").json()["status"] == "completed", 240,
                 "the study to complete on the remaining task")
        completed_s = time.monotonic() - sbatch_at
        # The survivor finds nothing more to claim and exits: the allocation is freed.
        wait_for(lambda: set(slurm.states(job).values()) <= {"COMPLETED", "CANCELLED"}, 60,
                 "both array tasks to end")
        ended_s = time.monotonic() - sbatch_at
    finally:
        slurm.cancel_and_wait(job)

    logs = {p.name: p.read_text() for p in tmp_path.glob("task-*.out")}
    victim_log = logs.get(f"task-{job}_{victim.scheduler_task}.out", "")
    assert "SIGTERM" in victim_log and "given back" in victim_log, victim_log[-3000:]
    assert any("resuming from checkpoint at" in text for text in logs.values()), logs
    survivor = "2" if victim.scheduler_task == "1" else "1"
    assert slurm.states(job) == {f"{job}_{victim.scheduler_task}": "CANCELLED", f"{job}_{survivor}": "COMPLETED"}

    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["counts"]["complete"] == 3 and study["counts"]["failed"] == 0, study["counts"]
    for trial in trials(client, study_id):
        assert trial["state"] == "complete" and trial["value"] is not None
        assert trial["attempts"] == 1, "no attempt used up by the cancel (max_attempts is 1)"
        points = [p["examples_seen"] for p in trial["intermediate"]]
        assert points == [EVERY * k for k in range(1, 4)], (trial["number"], points)

    # The workers view names each worker's array job and task; the cancelled one stopped cleanly (SIGTERM
    # handled: it marked itself stopped, which a SIGKILLed worker cannot do).
    workers = {w["scheduler_task"]: w for w in client.get("/v1/workers").json()["items"]}
    assert set(workers) == {"1", "2"}
    assert all(w["scheduler"] == "slurm" and w["scheduler_job"] == job for w in workers.values())
    assert all(w["status"] == "stopped" for w in workers.values()), workers

    # `stsweep slurm ls` shows the array's tasks; sbatch read the quoted --extra-sbatch option back intact.
    listing = slurm.run(str(STSWEEP), "slurm", "ls", job, env=env).stdout
    assert f"{job}_1" in listing and f"{job}_2" in listing and "CANCELLED" in listing and "COMPLETED" in listing
    by_name = slurm.run(str(STSWEEP), "slurm", "ls", "--job-name", name, env=env).stdout
    assert f"{job}_1" in by_name and f"{job}_2" in by_name
    shown = slurm.run("scontrol", "show", "job", f"{job}_1").stdout
    assert f"Comment={comment}" in shown and "TimeLimit=00:20:00" in shown, shown

    print(f"\nSLURM sbatch_to_first_claim_s={first_claim_s:.1f} cancelled_trial_resumed_after_s={resumed_after_s:.1f}"
          f" (after sbatch: cancel at {victim_found_s:.1f} s, study complete at {completed_s:.1f} s, "
          f"tasks ended at {ended_s:.1f} s)")
