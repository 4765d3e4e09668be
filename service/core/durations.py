"""Durations written the way people write them: 30d, 12h, 90m, 3600s."""

from __future__ import annotations

import re

from service.core.numeric_limits import limit

_DURATION = re.compile(r"(\d{1,12})([smhd])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> int:
    """Seconds in a duration like 30d, 12h, 90m or 3600s (a positive whole number and one unit); ValueError
    for anything else, or for one past the token expiry bound (100 years)."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a duration like 30d, 12h, 90m or 3600s")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if limit("token.expires_in_seconds").problem(seconds) is not None:
        raise ValueError(f"{value!r} is longer than the limit, 100 years")
    return seconds
