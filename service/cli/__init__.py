"""The `stsweep` command line: server-side commands in `app`, HTTP client commands in `client_commands`."""

from __future__ import annotations

from service.cli.app import app, main

__all__ = ["app", "main"]
