"""`stsweep worker` (and `python -m workers`): kept apart from the other server commands so the worker's
entry point imports nothing of the API."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from service.cli.common import fail, load_settings
from service.cli.extras import require_extra


def worker(
    gpus: Annotated[str, typer.Option(help="'all', a list like 0,1, or 'none' for the CPU.")] = "all",
    trials_per_gpu: Annotated[int, typer.Option(min=1, help="Trials side by side on one GPU.")] = 1,
    device: Annotated[Optional[str], typer.Option(help="Run one worker on this device (cpu, cuda:0).")] = None,
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="Exit after this many trials.")] = None,
    exit_when_idle: Annotated[Optional[float], typer.Option(help="Exit after this many idle seconds.")] = None,
    embedded_database: Annotated[bool, typer.Option(
        "--embedded-database", help="Without STSWEEP_DATABASE_URL, start a private PostgreSQL under STSWEEP_HOME "
        "(else the worker refuses to start: it would work for nobody).")] = False,
) -> None:
    """Pull trials from the queue and train them, until SIGTERM / Ctrl-C. Joins STSWEEP_DATABASE_URL and says so."""
    require_extra("worker", "worker")
    from workers.main import run_worker

    try:
        code = run_worker(load_settings(), gpus=gpus, trials_per_gpu=trials_per_gpu, device=device,
                          max_trials=max_trials, exit_when_idle=exit_when_idle, embedded_database=embedded_database)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    raise typer.Exit(code)
