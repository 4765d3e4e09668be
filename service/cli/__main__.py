"""`python -m service.cli` is `stsweep`."""

from __future__ import annotations

from service.cli.app import main

main()
