"""`stsweep worker` / `python -m workers`: one process per GPU (each seeing only its device), K trial
processes per GPU with --trials-per-gpu, or one CPU worker when there is no GPU."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from service.context import Context
from service.core.scheduler import scheduler_job
from service.local.embedded_pg import database_url
from service.local.supervisor import ChildSpec, Supervisor, lease_releaser
from service.settings import Settings
from service.store.retry import GaveUp
from workers.signals import ShutdownSignals

log = logging.getLogger("stsweep.worker")


def visible_gpus(gpus: str | None) -> list[int]:
    """`all` -> every CUDA device, `0,2` -> those, None/`none` -> none (CPU)."""
    if gpus is None or gpus == "none":
        return []
    import torch

    if gpus == "all":
        return list(range(torch.cuda.device_count()))
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError as exc:
        raise ValueError(f"--gpus: expected 'all' or a list like 0,1 (got {gpus!r})") from exc
    count = torch.cuda.device_count()
    missing = [g for g in ids if g >= count]
    if missing:
        raise ValueError(f"--gpus: no GPU {missing[0]} (this machine has {count})")
    return ids


SUPERVISED = "_STSWEEP_SUPERVISED"  # set by `supervise` in its children's environment


def stop_with_parent() -> None:
    """A supervised child gets SIGTERM when its supervisor dies, however it dies (Linux: PR_SET_PDEATHSIG): it
    checkpoints and gives its trial back, rather than go on unsupervised beside the children of the supervisor
    started next."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the child outlives a killed supervisor
    if os.getppid() == 1:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def joined_database(settings: Settings, embedded_database: bool) -> str:
    """The database this worker works for: STSWEEP_DATABASE_URL; without it, an embedded PostgreSQL only when
    asked for (`--embedded-database`; `stsweep up` and the demo hand their workers the URL of theirs), since a
    worker that quietly starts its own database works for nobody. ValueError (exit 2) otherwise."""
    if settings.database_url is None and not embedded_database:
        raise ValueError("no STSWEEP_DATABASE_URL: set it to the database of the deployment this worker should join "
                         "(or pass --embedded-database to start a private one under STSWEEP_HOME)")
    return database_url(settings)


def shown_url(url: str) -> str:
    """A database URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def run_worker(settings: Settings, *, gpus: str | None = "all", trials_per_gpu: int = 1, device: str | None = None,
               max_trials: int | None = None, exit_when_idle: float | None = None,
               embedded_database: bool = False) -> int:
    """Run one worker in this process, or supervise one child process per GPU slot. Returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    url = joined_database(settings, embedded_database)
    if device is None:
        ids = visible_gpus(gpus)
        if len(ids) > 1 or trials_per_gpu > 1:
            log.info("workers join database %s%s", shown_url(url), " (embedded)" if settings.embedded else "")
            return supervise(settings, url, ids or [-1], trials_per_gpu, max_trials, exit_when_idle)
        device = f"cuda:{ids[0]}" if ids else "cpu"
    from transformers.utils import logging as hf_logging

    from workers.loop import Worker  # imports torch: only in the process that trains

    hf_logging.disable_progress_bar()

    signals = ShutdownSignals(settings.shutdown_grace_seconds)
    signals.install()
    if os.environ.get(SUPERVISED):
        stop_with_parent()
    job = scheduler_job(os.environ)  # the SLURM array job and task this worker runs in, if it does
    if job is not None:
        log.info("running in %s job %s", job.scheduler, job.label)
    # One pool for our tables and Optuna's: at rest a worker holds at most 2 connections (its loop and its
    # heartbeat thread); a burst (a maintenance round, a checkpoint recorded while the heartbeat beats) opens up
    # to 2 more, closed as soon as they are returned.
    ctx = Context(settings, url, pool_size=2, max_overflow=2, application_name="stsweep-worker")
    log.info("worker on %s joins database %s%s", device, shown_url(url), " (embedded)" if settings.embedded else "")
    try:
        worker = Worker(ctx, device, signals, scheduler=job)
    except GaveUp:
        log.warning("stopped before the database answered")
        ctx.close()
        return 0
    try:
        worker.run(max_trials=max_trials, exit_when_idle=exit_when_idle)
    finally:
        ctx.close()
    return 0


def supervise(settings: Settings, url: str, gpu_ids: list[int], per_gpu: int, max_trials: int | None,
              exit_when_idle: float | None) -> int:
    """Start one child per (GPU, slot) and keep them running: a child that exits unexpectedly (killed, crashed)
    is restarted with backoff, and a crash loop is reported (service/local/supervisor.py). A child that ends by
    itself (--max-trials, --exit-when-idle) stays ended. SIGTERM/SIGINT are passed on (a second one kills)."""
    specs = []
    for gpu in gpu_ids:
        for slot in range(per_gpu):
            env = {**os.environ, "STSWEEP_DATABASE_URL": url, SUPERVISED: "1"}
            device = "cpu"
            if gpu >= 0:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                device = "cuda:0"
            cmd = [sys.executable, "-m", "workers", "--device", device]
            if max_trials is not None:
                cmd += ["--max-trials", str(max_trials)]
            if exit_when_idle is not None:
                cmd += ["--exit-when-idle", str(exit_when_idle)]
            name = f"worker {'cpu' if gpu < 0 else f'gpu {gpu}'} slot {slot}"
            specs.append(ChildSpec(name, cmd, env, clean_exit_ends=True))
    ctx = Context(settings, url, pool_size=1, max_overflow=1, application_name="stsweep-supervisor")
    supervisor = Supervisor(specs, cap=settings.restart_backoff_max_seconds, on_exit=lease_releaser(ctx.sessions))
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        supervisor.stopping = True
        supervisor.signal_all(signal.SIGKILL if len(received) > 1 else signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    supervisor.start()
    log.info("supervising %d worker processes (pids %s)", len(specs),
             ", ".join(str(p.pid) for p in supervisor.processes))
    try:
        while supervisor.alive():
            supervisor.poll()
            time.sleep(0.2)
    finally:
        ctx.close()
    return supervisor.exit_code()
