"""Which batch-scheduler job a process runs in, from the variables the scheduler sets (read once, by the worker's
entry point, and recorded with the worker so the workers view can name the job and task)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerJob:
    scheduler: str | None  # 'slurm'
    job: str | None  # the SLURM array job id (what `scancel JOB_TASK` takes), or the job id outside an array
    task: str | None  # the array task id; None outside an array

    @property
    def label(self) -> str:
        """`1234_5` for an array task, `1234` for a plain job: the form squeue shows and scancel takes."""
        return f"{self.job}_{self.task}" if self.task is not None else str(self.job)


def _value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value[:64] if value else None


def scheduler_job(env: Mapping[str, str]) -> SchedulerJob | None:
    """The SLURM job (and array task) of this process, or None outside SLURM. SLURM_ARRAY_JOB_ID and
    SLURM_ARRAY_TASK_ID are set in array tasks (SLURM_JOB_ID is then the task's own job id)."""
    array_job, task = _value(env, "SLURM_ARRAY_JOB_ID"), _value(env, "SLURM_ARRAY_TASK_ID")
    if array_job is not None and task is not None:
        return SchedulerJob("slurm", array_job, task)
    job = _value(env, "SLURM_JOB_ID")
    return SchedulerJob("slurm", job, None) if job is not None else None
