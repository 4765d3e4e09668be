"""The names of trial states and study statuses, once."""

from __future__ import annotations

from typing import Literal, get_args

TrialState = Literal["queued", "running", "complete", "pruned", "failed"]
StudyStatus = Literal["queued", "running", "paused", "stopped", "completed", "failed"]

TRIAL_STATES: tuple[str, ...] = get_args(TrialState)
STUDY_STATUSES: tuple[str, ...] = get_args(StudyStatus)
FINISHED_TRIAL_STATES = ("complete", "pruned", "failed")
