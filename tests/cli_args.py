"""Check a `stsweep ...` command line against the real Typer app without running it."""

from __future__ import annotations

from typing import Any

import click
import pytest
import typer

from service.cli.app import app

# Recent Typer ships its own copy of Click, whose errors derive from typer.TyperException instead.
USAGE_ERRORS = tuple(c for c in (click.ClickException, getattr(typer, "TyperException", None)) if c is not None)


def check_cli_args(args: list[str], where: str) -> Any:
    """Parse `stsweep ARGS` as the CLI would (subcommands, options, value types) without running anything."""
    command: Any = typer.main.get_command(app)
    path = ["stsweep"]
    rest = list(args)
    while isinstance(getattr(command, "commands", None), dict):  # a group (Click's, or Typer's copy of it)
        assert rest, f"{where}: `{' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"{where}: `{' '.join(path)}` has no subcommand {name!r} ({sorted(command.commands)})"
        command, path = sub, [*path, name]
    try:
        command.make_context(" ".join(path), rest)
    except USAGE_ERRORS as exc:
        pytest.fail(f"{where}: `{' '.join(path + rest)}` is not a valid command line: {exc.format_message()}")
    return command
