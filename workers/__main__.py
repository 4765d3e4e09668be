"""`python -m workers`: the same worker as `stsweep worker`."""

from __future__ import annotations

from service.cli.app import app

if __name__ == "__main__":
    app(["worker", *__import__("sys").argv[1:]], prog_name="python -m workers")
