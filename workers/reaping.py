"""Workers reap expired leases before each claim, so no trial waits on a control plane being up."""

from __future__ import annotations

import logging

from service.context import Context
from service.errors import StsweepError
from service.reaper import reap_once

log = logging.getLogger("stsweep.worker")


def reap_quietly(ctx: Context) -> None:
    try:
        reap_once(ctx)
    except StsweepError as exc:
        log.warning("reaper: %s", exc.message)
