"""SQL fragments over a `studies` row (its columns unqualified), written once."""

from __future__ import annotations

# Whether the study's budget.timeout_seconds has passed since it started (false without a timeout or a start).
TIMED_OUT_SQL = """(timeout_seconds IS NOT NULL AND started_at IS NOT NULL
                    AND now() >= started_at + make_interval(secs => timeout_seconds))"""
