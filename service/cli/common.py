"""What every `stsweep` command shares: the one-line error exit and the one read of the settings."""

from __future__ import annotations

import typer

from service.cli.inert import clean
from service.settings import Settings


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: MESSAGE`` (control codes removed: it may quote a server, a database or a user) and return
    the exit to raise."""
    typer.secho(f"error: {clean(message, newlines=True)}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError on a bad STSWEEP_* variable
        raise fail(f"bad configuration: {exc}", 2) from exc
