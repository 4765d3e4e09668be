"""`python -m workers`: the same worker as `stsweep worker`."""

from __future__ import annotations

import typer

from service.cli.worker_command import worker

if __name__ == "__main__":
    typer.run(worker)
