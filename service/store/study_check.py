"""Whether a stored study row still holds a study the fleet can run.

The API checks every study it stores, but a row may hold anything: a value written by hand, or by an older
version. Before a study's row is used to run it (a claim, an extend), it is checked here: its columns (the
timeout, the limits, the direction, the start) and its spec (it still validates, and its sampler and pruner
can be built). A row that fails raises CorruptStudy naming the field, and the caller quarantines the study
(service/store/quarantine.py) instead of running it.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from service.core.errors import CorruptStudy
from service.core.spec import StudySpec, field_errors
from service.store import optuna_bridge
from service.store.study_sql import MAX_TIMEOUT_SECONDS


def check_columns(row: Any) -> None:
    """CorruptStudy when a column read with study_sql.CHECKED_COLUMNS holds what no valid study can."""
    timeout = row.timeout_seconds
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT_SECONDS):
        raise CorruptStudy(f"budget.timeout_seconds: {timeout!r} is not a number of seconds in "
                           f"(0, {MAX_TIMEOUT_SECONDS:.0e}]", field="budget.timeout_seconds")
    for column, field in (("max_concurrent_trials", "budget.max_concurrent_trials"),
                          ("max_attempts", "max_attempts"), ("n_trials", "budget.n_trials")):
        value = getattr(row, column)
        if value is None or value < 1:
            raise CorruptStudy(f"{field}: {value!r} is not a positive number", field=field)
    if row.direction not in ("minimize", "maximize"):
        raise CorruptStudy(f"objective.direction: {row.direction!r} is neither minimize nor maximize",
                           field="objective.direction")
    if row.spec_type != "object":
        raise CorruptStudy(f"spec: a JSON {row.spec_type}, not an object", field="spec")
    if not row.started_ok:
        raise CorruptStudy("started_at: not a finite time", field="started_at")


def parse_spec(spec: Any) -> StudySpec:
    """The stored spec as a StudySpec; CorruptStudy naming the first field at fault when it no longer
    validates."""
    try:
        return StudySpec.model_validate(spec)
    except ValidationError as exc:
        first = (field_errors(exc) or [{"field": "spec", "message": "invalid"}])[0]
        raise CorruptStudy(f"{first['field']}: {first['message']} (the stored spec no longer validates)",
                           field=first["field"]) from exc


def check_spec(spec: Any) -> StudySpec:
    """The stored spec as a StudySpec whose sampler and pruner can be built; CorruptStudy otherwise."""
    parsed = parse_spec(spec)
    check_buildable(parsed)
    return parsed


def check_buildable(parsed: StudySpec) -> None:
    """CorruptStudy when the study's sampler or pruner cannot be built (a spec that validates may still hold,
    say, a grid past the ceiling: the API refuses it, a row written by hand need not)."""
    for part, build in (("sampler", optuna_bridge.make_sampler), ("pruner", optuna_bridge.make_pruner)):
        try:
            build(parsed)
        except Exception as exc:  # noqa: BLE001 - whatever Optuna raises, the spec cannot run
            raise CorruptStudy(f"{part}: cannot be built ({type(exc).__name__}: {exc})", field=part) from exc


def check_row(row: Any) -> None:
    """Both checks, on a row read with study_sql.CHECKED_COLUMNS and `spec`. A spec that passed once in this
    process is not parsed again (every claim checks its study's row: parsing the spec and building its sampler
    costs milliseconds of CPU); one that fails is checked, and fails, every time."""
    check_columns(row)
    _check_spec_json(json.dumps(row.spec, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=256)
def _check_spec_json(spec_json: str) -> None:
    check_spec(json.loads(spec_json))
