"""Optuna's storage as a worker sees it: a bounded view of a study's history, read incrementally.

Optuna's own cache (`_CachedStorage`) loads every trial of a study on first access and hands every one to the
sampler on each ask: joining a 10^5-trial study takes tens of seconds and TPE pays about 12 us per trial per
ask. `BoundedStorage` wraps the same `RDBStorage` and answers `get_all_trials` with a view of at most
`recent + best` finished trials plus the unfinished ones:

- every unfinished trial (RUNNING, WAITING: bounded by the study's concurrency), so a constant liar, the
  grid sampler and our slot tags see them all;
- the `recent` finished trials (complete, pruned, failed) with the largest trial ids;
- the `best` complete trials by value (in the study's direction; ties: the older trial first).

The view is a function of the database alone (not of when a process joined), so every process samples a trial
the same way. Below the bound (at most `recent` finished trials) it is the whole history, exactly what
Optuna's cache gives. Joining reads the view's trial ids in one statement (from indexes on Optuna's tables,
`ensure_indexes`) and then those trials; later reads fetch only the unfinished trials and those created since
(as Optuna's cache does), and fold them into the window: both sets only grow by trials that arrive, so the
incremental window equals the one a fresh join would read.

Pruners see `recent_view`: the unfinished trials and the `recent` window only, never the best-`best` extras
(they would bias a median upwards). Exact up to `recent` finished trials; beyond, a trial is compared with the
completed trials among the `recent` most recent ones (a sliding window, not the whole history).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna import distributions
from optuna._typing import JSONSerializable
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class HistoryBound:
    """How much finished history a process keeps per study: the `recent` newest and the `best` best."""

    recent: int = 900
    best: int = 100


# Indexes on Optuna's tables that make a join O(view), not O(history). Created once per schema (idempotent).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS stsweep_trials_study_trial ON trials (study_id, trial_id)",
    "CREATE INDEX IF NOT EXISTS stsweep_trials_unfinished ON trials (study_id) "
    "WHERE state IN ('RUNNING', 'WAITING')",
    "CREATE INDEX IF NOT EXISTS stsweep_trial_values_value ON trial_values (objective, value)",
)

# The view's trial ids, in one snapshot: unfinished, then the newest finished, then the best complete.
_VIEW_IDS = """
    SELECT trial_id, state::text AS state FROM trials
    WHERE study_id = :sid AND state IN ('RUNNING', 'WAITING')
    UNION
    (SELECT trial_id, state::text FROM trials
     WHERE study_id = :sid AND state NOT IN ('RUNNING', 'WAITING')
     ORDER BY study_id DESC, trial_id DESC LIMIT :recent)
    UNION
    (SELECT t.trial_id, 'COMPLETE' FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id
     WHERE t.study_id = :sid AND t.state = 'COMPLETE' AND v.objective = 0
     ORDER BY (CASE v.value_type WHEN 'INF_NEG' THEN {neg} WHEN 'INF_POS' THEN {pos} ELSE 1 END),
              v.value {order}, t.trial_id
     LIMIT :best)
"""

_REFRESH_IDS = """
    SELECT trial_id FROM trials WHERE trial_id = ANY(:unfinished)
    UNION
    SELECT trial_id FROM trials WHERE study_id = :sid AND trial_id > :cursor
"""


def ensure_indexes(backend: RDBStorage) -> None:
    """The view's indexes, built by one process at a time (a transaction-level advisory lock: PgBouncer-safe)."""
    with backend.engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('stsweep-optuna-indexes'))"))
        for ddl in INDEXES:
            conn.execute(text(ddl))


def _value_key(trial: FrozenTrial, maximize: bool) -> tuple[float, int]:
    value = float(trial.value) if trial.value is not None else float("nan")
    return (-value if maximize else value, trial._trial_id)


@dataclass
class _StudyView:
    maximize: bool
    unfinished: dict[int, FrozenTrial] = field(default_factory=dict)
    recent: dict[int, FrozenTrial] = field(default_factory=dict)  # the newest finished, by trial id
    best: dict[int, FrozenTrial] = field(default_factory=dict)  # the best complete, by value
    cursor: int = -1  # the largest finished trial id folded in; newer ones are read on each refresh
    param_distribution: dict[str, distributions.BaseDistribution] = field(default_factory=dict)

    def fold(self, trials: Iterable[FrozenTrial], bound: HistoryBound) -> None:
        new_finished: list[FrozenTrial] = []
        for t in trials:
            if not t.state.is_finished():
                self.unfinished[t._trial_id] = t
                continue
            self.unfinished.pop(t._trial_id, None)
            self.cursor = max(self.cursor, t._trial_id)
            new_finished.append(t)
        if not new_finished:
            return
        recent = {**self.recent, **{t._trial_id: t for t in new_finished}}
        self.recent = {tid: recent[tid] for tid in sorted(recent, reverse=True)[:bound.recent]}
        best = {**self.best, **{t._trial_id: t for t in new_finished
                                if t.state == TrialState.COMPLETE and t.value is not None}}
        ranked = sorted(best.values(), key=lambda t: _value_key(t, self.maximize))[:bound.best]
        self.best = {t._trial_id: t for t in ranked}

    def trials(self, with_best: bool = True) -> list[FrozenTrial]:
        seen: dict[int, FrozenTrial] = {**self.recent, **(self.best if with_best else {}), **self.unfinished}
        return sorted(seen.values(), key=lambda t: t.number)


class BoundedStorage(BaseStorage):
    """`RDBStorage` behind a bounded, incrementally read view of each study's trials (see the module)."""

    def __init__(self, backend: RDBStorage, bound: HistoryBound | None = None) -> None:
        self._backend = backend
        self.bound = bound or HistoryBound()
        self._views: dict[int, _StudyView] = {}
        self._owner: dict[int, int] = {}  # trial id -> study id, for the trials this process wrote
        self._lock = threading.RLock()

    @property
    def backend(self) -> RDBStorage:
        return self._backend

    # ------------------------------------------------------------------ the view

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._select(study_id, deepcopy, states, with_best=True)

    def recent_trials(self, study_id: int, deepcopy: bool = True,
                      states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """The view without the best-`best` extras: unfinished trials and the `recent` newest finished."""
        return self._select(study_id, deepcopy, states, with_best=False)

    def _select(self, study_id: int, deepcopy: bool, states: Container[TrialState] | None,
                with_best: bool) -> list[FrozenTrial]:
        with self._lock:
            view = self._refresh(study_id)
            trials = [t for t in view.trials(with_best) if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _refresh(self, study_id: int) -> _StudyView:
        view = self._views.get(study_id)
        if view is None:
            return self._join(study_id)
        # As Optuna's cache: the unfinished trials we know, and every trial newer than the last finished one;
        # their ids first, from indexes (Optuna's own query scans the whole study for them).
        with self._backend.engine.connect() as conn:
            ids = set(conn.execute(text(_REFRESH_IDS), {"sid": study_id, "cursor": view.cursor,
                                                        "unfinished": list(view.unfinished)}).scalars())
        self._load(study_id, view, ids)
        return view

    def _load(self, study_id: int, view: _StudyView, ids: set[int]) -> None:
        """Fold in the trials `ids`, and any created since (ids above them all)."""
        if ids:
            view.fold(self._backend._get_trials(study_id, None, ids, max(ids)), self.bound)

    def _join(self, study_id: int) -> _StudyView:
        maximize = self._backend.get_study_directions(study_id)[0] == StudyDirection.MAXIMIZE
        sql = _VIEW_IDS.format(order="DESC" if maximize else "ASC", neg=2 if maximize else 0,
                               pos=0 if maximize else 2)
        with self._backend.engine.connect() as conn:
            rows = conn.execute(text(sql), {"sid": study_id, "recent": self.bound.recent,
                                            "best": self.bound.best}).all()
        wanted = {tid for tid, _ in rows}
        view = _StudyView(maximize=maximize)
        self._load(study_id, view, wanted)
        self._views[study_id] = view
        return view

    # ------------------------------------------------------------------ trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        frozen = self._backend._create_new_trial(study_id, template_trial)
        with self._lock:
            self._owner[frozen._trial_id] = study_id
        return frozen._trial_id

    def _study_of(self, trial_id: int) -> int:
        with self._lock:
            if trial_id in self._owner:
                return self._owner[trial_id]
        with self._backend.engine.connect() as conn:
            study_id = int(conn.execute(text("SELECT study_id FROM trials WHERE trial_id = :t"),
                                        {"t": trial_id}).scalar_one())
        with self._lock:
            self._owner[trial_id] = study_id
        return study_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: distributions.BaseDistribution) -> None:
        study_id = self._study_of(trial_id)
        with self._lock:
            known = self._views.get(study_id)
            cached = known.param_distribution.get(param_name) if known is not None else None
        self._backend._set_trial_param(trial_id, param_name, param_value_internal, distribution, cached)
        if known is not None and cached is None:
            with self._lock:
                known.param_distribution[param_name] = distribution

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            for view in self._views.values():
                t = view.recent.get(trial_id) or view.best.get(trial_id)
                if t is not None:
                    return t
        return self._backend.get_trial(trial_id)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        direction = self._backend.get_study_directions(study_id)[0]
        return self.get_trial(self._backend._get_best_trial_id(study_id, direction))

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        return self._backend.set_trial_state_values(trial_id, state=state, values=values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._backend.set_trial_user_attr(trial_id, key=key, value=value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: JSONSerializable) -> None:
        self._backend.set_trial_system_attr(trial_id, key=key, value=value)

    # ------------------------------------------------------------------ studies (straight through)

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._backend.create_new_study(directions=directions, study_name=study_name)

    def delete_study(self, study_id: int) -> None:
        with self._lock:
            self._views.pop(study_id, None)
        self._backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: JSONSerializable) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._backend.get_all_studies()
