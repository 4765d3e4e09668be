"""`stsweep worker` / `python -m workers`: one process per GPU (each seeing only its device), K trial
processes per GPU with --trials-per-gpu, or one CPU worker when there is no GPU."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from service.context import Context
from service.local.embedded_pg import database_url
from service.settings import Settings
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


def run_worker(settings: Settings, *, gpus: str | None = "all", trials_per_gpu: int = 1, device: str | None = None,
               max_trials: int | None = None, exit_when_idle: float | None = None) -> int:
    """Run one worker in this process, or supervise one child process per GPU slot. Returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if device is None:
        ids = visible_gpus(gpus)
        if len(ids) > 1 or trials_per_gpu > 1:
            return supervise(settings, ids or [-1], trials_per_gpu, max_trials, exit_when_idle)
        device = f"cuda:{ids[0]}" if ids else "cpu"
    from transformers.utils import logging as hf_logging

    from workers.loop import Worker  # imports torch: only in the process that trains

    hf_logging.disable_progress_bar()

    signals = ShutdownSignals(settings.shutdown_grace_seconds)
    signals.install()
    ctx = Context(settings, database_url(settings))
    try:
        Worker(ctx, device, signals).run(max_trials=max_trials, exit_when_idle=exit_when_idle)
    finally:
        ctx.close()
    return 0


def supervise(settings: Settings, gpu_ids: list[int], per_gpu: int, max_trials: int | None,
              exit_when_idle: float | None) -> int:
    """Start one child per (GPU, slot), forward SIGTERM/SIGINT to them, wait for all."""
    url = database_url(settings)
    children: list[subprocess.Popen[bytes]] = []
    for gpu in gpu_ids:
        for _ in range(per_gpu):
            env = {**os.environ, "STSWEEP_DATABASE_URL": url}
            device = "cpu"
            if gpu >= 0:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                device = "cuda:0"
            cmd = [sys.executable, "-m", "workers", "--device", device]
            if max_trials is not None:
                cmd += ["--max-trials", str(max_trials)]
            if exit_when_idle is not None:
                cmd += ["--exit-when-idle", str(exit_when_idle)]
            children.append(subprocess.Popen(cmd, env=env))
    log.info("supervising %d worker processes", len(children))
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL if len(received) > 1 else signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(child.poll() is None for child in children):
        time.sleep(0.2)
    return max((child.returncode or 0 for child in children), default=0)
