"""SQL fragments over a `studies` row (its columns unqualified), written once.

Every fragment here is evaluated across many studies at once (a claim, the reaper), so none of them may raise
whatever a row holds (a value written by hand or by an older version): one poisoned row would otherwise break
the statement for every study. They compare numbers, never build an interval from a stored value."""

from __future__ import annotations

# The statuses of a study whose slots may be claimed (service/store/lifecycle.py owns the state machine).
ACTIVE_STUDY = "('queued', 'running')"

# The largest budget.timeout_seconds a study row may hold (about 31,700 years): beyond it PostgreSQL cannot
# represent the study's deadline as a timestamp. A row outside (0, MAX_TIMEOUT_SECONDS], NaN or infinite
# included, is poisoned (service/store/study_check.py).
MAX_TIMEOUT_SECONDS = 1e12

# Seconds since the study started (NULL before it started or for a non-finite start): epoch arithmetic in
# numeric, which never overflows the way `now() - started_at` (an interval) can.
_ELAPSED_SQL = ("CASE WHEN isfinite(started_at) THEN extract(epoch FROM now()) - extract(epoch FROM started_at) "
                "END")

# Whether the row's timeout is usable (NULL: none). NaN sorts above every number in PostgreSQL, so it fails the
# upper bound like infinity does.
TIMEOUT_OK_SQL = f"(timeout_seconds IS NULL OR (timeout_seconds > 0 AND timeout_seconds <= {MAX_TIMEOUT_SECONDS:.0f}))"

# Whether the study's budget.timeout_seconds has passed since it started (false without a timeout or a start,
# and for a timeout that is not usable: such a study is quarantined instead, see study_check.py).
TIMED_OUT_SQL = f"""(timeout_seconds IS NOT NULL AND started_at IS NOT NULL
                    AND timeout_seconds > 0 AND timeout_seconds <= {MAX_TIMEOUT_SECONDS:.0f}
                    AND {_ELAPSED_SQL} >= timeout_seconds)"""

# Whether the columns a claim, the reaper and the lifecycle read hold what a valid study can hold (the spec
# itself is checked in Python, study_check.py). A prefilter: study_check.column_problem says what is wrong.
COLUMNS_OK_SQL = f"""({TIMEOUT_OK_SQL} AND max_concurrent_trials >= 1 AND max_attempts >= 1 AND n_trials >= 1
                     AND direction IN ('minimize', 'maximize') AND jsonb_typeof(spec) = 'object'
                     AND (started_at IS NULL OR isfinite(started_at)))"""

# The columns study_check.column_problem reads.
CHECKED_COLUMNS = """id, timeout_seconds, max_concurrent_trials, max_attempts, n_trials, direction,
                     jsonb_typeof(spec) AS spec_type, (started_at IS NULL OR isfinite(started_at)) AS started_ok"""


def json_int(path: str, default: str = "NULL") -> str:
    """The JSON value at `path` (e.g. `spec->'confirm'->'top_k'`) as an int, or `default` when it is not an
    integer that fits one: never a cast error, whatever the row holds."""
    return (f"(CASE WHEN jsonb_typeof({path}) = 'number' AND ({path})::numeric = trunc(({path})::numeric) "
            f"AND abs(({path})::numeric) <= 2147483647 THEN (({path})::numeric)::int ELSE {default} END)")


def json_number(path: str, default: str = "NULL") -> str:
    """The JSON number at `path` as a numeric (which holds any JSON number, unlike float8), or `default` when it
    is not a number."""
    return f"(CASE WHEN jsonb_typeof({path}) = 'number' THEN ({path})::numeric ELSE {default} END)"
