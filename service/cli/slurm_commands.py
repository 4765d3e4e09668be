"""`stsweep slurm submit` and `stsweep slurm ls`: workers as a SLURM job array, one `stsweep worker` per array
task, sharing only PostgreSQL and the artifact store.

The script is rendered by a pure function (`render_script`) from validated options (`array_job`). It holds no
setting and no secret: the database URL and the S3 keys reach the tasks through the environment sbatch runs in
(`--export=ALL`), never through the script or a command line. The worker is `exec`ed, so it is the batch shell
itself: `scancel` and preemption SIGTERM it directly, and `--signal=B:TERM@lead` reaches it before the time
limit (a plain `--signal=TERM@` would signal only job steps, which this script has none of).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

from service.cli.common import fail, load_settings
from service.cli.inert import clean, text
from service.settings import Settings

slurm_app = typer.Typer(help="Run workers as a SLURM job array.", no_args_is_help=True)

DEFAULT_JOB_NAME = "stsweep-worker"
DEFAULT_OUTPUT = "stsweep-worker-%A_%a.out"
DEFAULT_EXIT_WHEN_IDLE = 300.0
# Seconds the SIGTERM comes before the time limit on top of the worker's shutdown grace, so the worker has
# exited (trial given back) before SLURM's own end-of-time SIGTERM and SIGKILL.
SIGNAL_MARGIN_SECONDS = 10
# Options the script sets itself: overriding them through --extra-sbatch would break the contract.
RESERVED_OPTIONS = {"-a": "--workers", "--array": "--workers", "--signal": "the worker's shutdown grace",
                    "--export": "the environment (secrets travel in it)", "--wrap": "the rendered script"}

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_PARTITION = re.compile(r"[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*")
_TIME = re.compile(r"(?:(\d+)-)?(\d{1,4}):(\d{2}):(\d{2})")
_JOB_ID = re.compile(r"\d+(_\d+)?")


class OptionError(ValueError):
    """A bad option: its message starts with the option's name."""


@dataclass(frozen=True)
class ArrayJob:
    """What one sbatch array script says, validated."""

    workers: int
    gpus_per_worker: int
    signal_lead_seconds: int
    exit_when_idle: float
    stsweep: str  # the command each task execs
    job_name: str = DEFAULT_JOB_NAME
    output: str = DEFAULT_OUTPUT
    partition: str | None = None
    time_limit: str | None = None
    account: str | None = None
    extra: tuple[str, ...] = ()  # extra sbatch options, one per #SBATCH line


def signal_lead_seconds(shutdown_grace_seconds: float) -> int:
    """How long before the time limit the worker gets its SIGTERM: its grace plus a margin."""
    return math.ceil(shutdown_grace_seconds) + SIGNAL_MARGIN_SECONDS


def parse_time_limit(value: str) -> int:
    """Seconds in a SLURM time limit written HH:MM:SS or D-HH:MM:SS."""
    match = _TIME.fullmatch(value.strip())
    if match is None:
        raise OptionError(f"--time: expected HH:MM:SS or D-HH:MM:SS (got {value!r})")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise OptionError(f"--time: minutes and seconds go up to 59 (got {value!r})")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise OptionError("--time: must be longer than 00:00:00")
    return total


def _whole(option: str, value: str, low: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise OptionError(f"{option}: expected a whole number (got {value!r})") from None
    if number < low:
        raise OptionError(f"{option}: must be at least {low} (got {number})")
    return number


def _name(option: str, value: str | None, pattern: re.Pattern[str] = _NAME) -> str | None:
    if value is None:
        return None
    if not pattern.fullmatch(value):
        raise OptionError(f"{option}: letters, digits and _ . + - only (got {value!r})")
    return value


def _directive_word(word: str) -> str:
    """One word of an #SBATCH line as sbatch reads it back: it splits on spaces, honours double quotes and
    backslash escapes, and ends the line at a # outside quotes."""
    if not any(c.isspace() or c in '"\\#' for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_extra_sbatch(values: list[str]) -> tuple[str, ...]:
    """Each value holds one or more sbatch options ("--mem=32G --qos high"); returns one option per item."""
    options: list[str] = []
    for value in values:
        if "\n" in value or "\r" in value:
            raise OptionError("--extra-sbatch: one line of options, no line breaks")
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise OptionError(f"--extra-sbatch: {exc} in {value!r}") from None
        for word in words:
            if word.startswith("-"):
                name = word.split("=", 1)[0]
                if name in RESERVED_OPTIONS:
                    raise OptionError(f"--extra-sbatch: {name} is set by stsweep (from {RESERVED_OPTIONS[name]})")
                options.append(_directive_word(word))
            elif options:  # the value of the option before it: "-q high", "--mem 32G"
                options[-1] = f"{options[-1]} {_directive_word(word)}"
            else:
                raise OptionError(f"--extra-sbatch: expected sbatch options like --mem=32G (got {word!r})")
    return tuple(options)


def array_job(*, workers: str | None, gpus_per_worker: str, partition: str | None, time_limit: str | None,
              account: str | None, extra_sbatch: list[str], job_name: str, output: str, exit_when_idle: str,
              shutdown_grace_seconds: float, stsweep: str) -> ArrayJob:
    """Every option checked; raises OptionError naming the first bad one."""
    if workers is None:
        raise OptionError("--workers: required (how many array tasks, one worker each)")
    n = _whole("--workers", workers, 1)
    gpus = _whole("--gpus-per-worker", gpus_per_worker, 0)
    try:
        idle = float(exit_when_idle)
    except ValueError:
        raise OptionError(f"--exit-when-idle: expected seconds (got {exit_when_idle!r})") from None
    if not idle > 0 or math.isinf(idle):
        raise OptionError(f"--exit-when-idle: must be a positive number of seconds (got {exit_when_idle!r})")
    lead = signal_lead_seconds(shutdown_grace_seconds)
    if lead > 65535:
        raise OptionError(f"STSWEEP_SHUTDOWN_GRACE_SECONDS: {shutdown_grace_seconds:g} s is more than SLURM's "
                          "--signal allows (65525 s)")
    if time_limit is not None:
        time_limit = time_limit.strip()
        if parse_time_limit(time_limit) <= lead:
            raise OptionError(f"--time: {time_limit} leaves no time to work: the worker's SIGTERM comes {lead} s "
                              "before the limit (STSWEEP_SHUTDOWN_GRACE_SECONDS plus "
                              f"{SIGNAL_MARGIN_SECONDS} s)")
    if not output or any(c.isspace() for c in output):
        raise OptionError(f"--output: a file name pattern without spaces (got {output!r})")
    return ArrayJob(workers=n, gpus_per_worker=gpus, signal_lead_seconds=lead, exit_when_idle=idle,
                    stsweep=stsweep, job_name=_name("--job-name", job_name) or DEFAULT_JOB_NAME, output=output,
                    partition=_name("--partition", partition, _PARTITION), time_limit=time_limit,
                    account=_name("--account", account), extra=parse_extra_sbatch(extra_sbatch))


def render_script(job: ArrayJob) -> str:
    """The sbatch script: directives, then `exec stsweep worker`. Holds no setting and no secret."""
    directives = [f"--job-name={job.job_name}", f"--array=1-{job.workers}", "--ntasks=1"]
    if job.gpus_per_worker:
        directives.append(f"--gres=gpu:{job.gpus_per_worker}")
    if job.partition:
        directives.append(f"--partition={job.partition}")
    if job.account:
        directives.append(f"--account={job.account}")
    if job.time_limit:
        directives.append(f"--time={job.time_limit}")
    directives += [f"--signal=B:TERM@{job.signal_lead_seconds}", "--export=ALL", f"--output={job.output}",
                   "--open-mode=append", *job.extra]
    gpus = "all" if job.gpus_per_worker else "none"
    worker = [job.stsweep, "worker", "--gpus", gpus, "--exit-when-idle", f"{job.exit_when_idle:g}"]
    return "\n".join([
        "#!/bin/bash",
        "# stsweep workers as a SLURM job array (rendered by `stsweep slurm submit`): one `stsweep worker` per",
        "# array task. Settings and secrets (STSWEEP_DATABASE_URL, STSWEEP_S3_*) come from the environment sbatch",
        "# was run in (--export=ALL); none is written here. The worker replaces this shell (exec), so scancel,",
        "# preemption and the --signal before the time limit SIGTERM it: it checkpoints, gives its trial back to",
        "# the queue and exits. Idle for --exit-when-idle seconds, it exits and frees the allocation.",
        *(f"#SBATCH {d}" for d in directives),
        "",
        f'echo "stsweep worker: SLURM job ${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}_${{SLURM_ARRAY_TASK_ID:-}} '
        f'on $(hostname)"',
        "exec " + shlex.join(worker),
        "",
    ])


def stsweep_executable() -> str:
    """The `stsweep` of this installation (its venv), so the tasks run the same version as the submitter."""
    beside = Path(sys.executable).parent / "stsweep"
    if beside.is_file() and os.access(beside, os.X_OK):
        return os.path.abspath(beside)
    return shutil.which("stsweep") or "stsweep"


def task_environment(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """sbatch's environment: ours, plus every STSWEEP_ setting that is set (also those read from a .env file),
    so the tasks see the same configuration. Secrets stay in the environment, never on a command line."""
    env = dict(base)
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"STSWEEP_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def _warnings(settings: Settings) -> list[str]:
    found = []
    host = urlsplit(settings.database_url or "").hostname
    if host in ("localhost", "127.0.0.1", "::1"):
        found.append(f"STSWEEP_DATABASE_URL points at {host}: only tasks on this machine can reach it")
    artifacts = settings.artifact_location()
    if not artifacts.startswith("s3://"):
        found.append(f"artifacts go to the folder {artifacts} on each node: use s3://bucket/prefix "
                     "(STSWEEP_ARTIFACT_ROOT) unless it is on a filesystem every node shares")
    return found


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip()) or "(no output)"


@slurm_app.command("submit")
def submit(
    workers: Annotated[Optional[str], typer.Option("--workers", "-n", metavar="N",
                                                   help="Array tasks: one worker each.")] = None,
    gpus_per_worker: Annotated[str, typer.Option(metavar="G", help="GPUs per task (--gres=gpu:G); 0: CPU.")] = "1",
    partition: Annotated[Optional[str], typer.Option(help="SLURM partition(s).")] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", metavar="HH:MM:SS",
                                                      help="Time limit per task (D-HH:MM:SS also).")] = None,
    account: Annotated[Optional[str], typer.Option(help="SLURM account to charge.")] = None,
    extra_sbatch: Annotated[Optional[list[str]], typer.Option(
        "--extra-sbatch", metavar='"OPTIONS"', help='More sbatch options, e.g. "--mem=32G --qos=high" (repeatable).')
    ] = None,
    job_name: Annotated[str, typer.Option(help="The array's job name (what `slurm ls` looks for).")] = DEFAULT_JOB_NAME,
    output: Annotated[str, typer.Option(help="Log file pattern of each task (%A array job, %a task).")] = DEFAULT_OUTPUT,
    exit_when_idle: Annotated[str, typer.Option(metavar="SECONDS", help="A task with nothing to claim for this long "
                                                "exits and frees its allocation.")] = f"{DEFAULT_EXIT_WHEN_IDLE:g}",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the script instead of submitting it.")] = False,
) -> None:
    """Submit N workers as a SLURM job array (sbatch) and print its job id.

    The tasks get the database URL and S3 keys from this environment (sbatch --export=ALL); the script never
    holds them. scancel, preemption and the time limit SIGTERM each worker, which gives its trial back."""
    settings = load_settings()
    try:
        job = array_job(workers=workers, gpus_per_worker=gpus_per_worker, partition=partition,
                        time_limit=time_limit, account=account, extra_sbatch=extra_sbatch or [], job_name=job_name,
                        output=output, exit_when_idle=exit_when_idle,
                        shutdown_grace_seconds=settings.shutdown_grace_seconds, stsweep=stsweep_executable())
    except OptionError as exc:
        raise fail(str(exc), 2) from exc
    script = render_script(job)
    if dry_run:
        typer.echo(script, nl=False)
        return
    if settings.database_url is None:
        raise fail("STSWEEP_DATABASE_URL is not set: every array task needs the shared PostgreSQL (export it, "
                   "then submit)", 2)
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise fail("sbatch not found on PATH: run this where SLURM's commands are (or --dry-run for the script)", 1)
    for warning in _warnings(settings):
        typer.secho(f"warning: {clean(warning)}", err=True, fg=typer.colors.YELLOW)
    done = subprocess.run([sbatch, "--parsable"], input=script, text=True, capture_output=True,
                          env=task_environment(settings, dict(os.environ)), check=False)
    if done.returncode != 0:
        raise fail(f"sbatch: {_one_line(done.stderr or done.stdout)}", 1)
    job_id = clean(done.stdout.strip().split(";")[0])
    typer.echo(job_id)
    typer.echo(f"submitted array job {job_id}: {job.workers} worker task(s); `stsweep slurm ls {job_id}` "
               "shows them", err=True)


@slurm_app.command("ls")
def ls(
    job_id: Annotated[Optional[str], typer.Argument(metavar="[JOB_ID]", help="One array (default: all of yours "
                                                    "named --job-name).")] = None,
    job_name: Annotated[str, typer.Option(help="The job name to look for.")] = DEFAULT_JOB_NAME,
) -> None:
    """The array's tasks, as squeue sees them (finished ones while SLURM still remembers them)."""
    if job_id is not None and not _JOB_ID.fullmatch(job_id):
        raise fail(f"JOB_ID: expected a SLURM job id like 1234 or 1234_5 (got {job_id!r})", 2)
    if _name("--job-name", job_name) is None:
        raise fail("--job-name: required", 2)
    squeue = shutil.which("squeue")
    if squeue is None:
        raise fail("squeue not found on PATH: run this where SLURM's commands are", 1)
    cmd = [squeue, "--array", "--noheader", "--states=all", "--format=%i|%T|%M|%l|%N|%r"]
    cmd += [f"--jobs={job_id}"] if job_id else [f"--name={job_name}", "--me"]
    done = subprocess.run(cmd, text=True, capture_output=True, check=False)
    if done.returncode != 0:
        message = _one_line(done.stderr)
        if job_id and "Invalid job id" in message:
            raise fail(f"job {job_id} is not in SLURM's queue (finished long ago, or never submitted)", 1)
        raise fail(f"squeue: {message}", 1)
    rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
    if not rows:
        typer.echo(f"no {job_name} jobs in SLURM's queue" if not job_id else f"job {job_id}: no tasks", err=True)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def order(row: list[str]) -> tuple[int, int]:
        head, _, task = row[0].partition("_")
        return (int(head) if head.isdigit() else 0, int(task) if task.isdigit() else -1)

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in ("task", "state", "elapsed", "time limit", "node", "reason"):
        table.add_column(column, no_wrap=True)
    for row in sorted(rows, key=order):
        task, state, elapsed, limit, node, reason = (row + [""] * 6)[:6]
        table.add_row(*(text(cell) for cell in (task, state, elapsed, limit, node or "-",
                                                "" if reason == "None" else reason)))
    Console(highlight=False).print(table)
