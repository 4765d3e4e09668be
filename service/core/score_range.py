"""The one parser of a score range given as text: `low,high` or `[low, high]`, finite, low < high."""

from __future__ import annotations

import json
import math

from service.core import numeric_limits
from service.core.errors import InvalidInput


def parse_score_range(raw: str, field: str = "score_range") -> tuple[float, float]:
    raw = raw.strip()
    try:
        values = json.loads(raw) if raw.startswith("[") else [float(x) for x in raw.split(",")]
    except (ValueError, json.JSONDecodeError):
        values = None
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise InvalidInput(f"expected 'low,high' or [low, high], got {raw!r}", field=field)
    low, high = float(values[0]), float(values[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidInput(f"need finite low < high, got {raw!r}", field=field)
    for value in (low, high):
        problem = numeric_limits.limit("upload.score_range.*").problem(value)
        if problem is not None:
            raise InvalidInput(problem, field=field)
    return low, high
