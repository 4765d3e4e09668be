"""Optuna behind our back: its storage (own schema), the study's sampler and pruner rebuilt from the spec.

Optuna does not persist samplers or pruners, so every process rebuilds them from the stored spec.
Steps are examples seen, so pruner settings given in examples line up across batch sizes.

Sampling is reproducible per trial and never repeats across processes: before each trial samples, the sampler
is rebuilt with a seed derived from the study's seed and the trial's slot number (a sampler seeded once per
process would restart its random sequence in every worker and after every restart). Each Optuna trial is
created already tagged with the slot and the lease it was asked for (and with the slot's enqueued
configuration, if it has one), in one write, so the reconciler can always tell whose it is.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from service.core.spec import CategoricalDistribution, FloatDistribution, IntDistribution, StudySpec
from service.store import optuna_storage
from service.store.db import make_engine
from service.store.fraction_pruner import PLANNED_ATTR, ScheduleFractionPruner
from service.store.optuna_history import BoundedStorage, HistoryBound

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A trial that ran out of device memory is told to Optuna as PRUNED with this constraint violated (> 0):
# TPE then puts it among the infeasible trials and steers away, where a FAIL would just be ignored.
INFEASIBLE_CONSTRAINT = "fits_device_memory"


def ensure_schema(database_url: str, schema: str) -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        optuna_storage.ensure_schema(engine, schema)
    finally:
        engine.dispose()


@functools.lru_cache(maxsize=8)
def storage(database_url: str, schema: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the same server, its tables (and its alembic_version) in their own schema, on an
    engine of its own (a running process uses its Context's, which shares our pool: `Context.optuna_storage`)."""
    return optuna_storage.on_engine(make_engine(database_url, pool_size=1), schema)


def bounded(store: optuna.storages.BaseStorage, history: HistoryBound | None = None) -> optuna.storages.BaseStorage:
    """What a study is opened on: Optuna's RDB storage behind a bounded view of each study's history (see
    service/store/optuna_history.py); any other storage as it is."""
    if isinstance(store, optuna.storages.RDBStorage):
        return BoundedStorage(store, history)
    return store


# System attributes on every Optuna trial we create: our trial row (the slot) and the lease that asked for it.
SLOT_ATTR = "stsweep:trial_id"
LEASE_ATTR = "stsweep:lease"


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is exhausted: outside `optimize()` that
    raises in the last `tell`, and our queue already knows the study's budget."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        return None


def study_seed(spec: StudySpec) -> int:
    """The sampler's seed: `sampler.seed`, else the study's `seed`."""
    return spec.sampler.seed if spec.sampler.seed is not None else spec.seed


def trial_seed(spec: StudySpec, number: int) -> int:
    """The sampling seed of the trial in slot `number`: the same for that trial in every process and every
    re-run of the study, different from every other trial's."""
    digest = hashlib.sha256(f"stsweep-sampler/{study_seed(spec)}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_sampler(spec: StudySpec, trial_number: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; with `trial_number`, seeded for that trial (see `trial_seed`). The grid sampler
    (its trial number picks the grid point) and the QMC sampler (its sequence is the study's) keep the study's
    seed: their points are already distinct per trial."""
    cfg = spec.sampler
    seed = study_seed(spec) if trial_number is None or cfg.name in ("grid", "qmc") else trial_seed(spec, trial_number)
    with warnings.catch_warnings():  # built for every trial: Optuna's "experimental argument" notes are noise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(spec, seed)


def _sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    cfg = spec.sampler
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "grid":
        return _GridSampler(spec.grid(), seed=seed)
    if cfg.name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if cfg.name == "cmaes":
        kwargs: dict[str, Any] = {"seed": seed}
        if cfg.n_startup_trials is not None:
            kwargs["n_startup_trials"] = cfg.n_startup_trials
        return optuna.samplers.CmaEsSampler(**kwargs)
    if cfg.name == "gp":
        kwargs = {"seed": seed}
        if cfg.n_startup_trials is not None:
            kwargs["n_startup_trials"] = cfg.n_startup_trials
        return optuna.samplers.GPSampler(**kwargs)
    kwargs = {
        "seed": seed,
        "multivariate": cfg.multivariate,
        "group": cfg.multivariate,
        "constant_liar": cfg.constant_liar,
    }
    if cfg.n_startup_trials is not None:
        kwargs["n_startup_trials"] = cfg.n_startup_trials
    return optuna.samplers.TPESampler(**kwargs)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    cfg = spec.pruner
    if cfg.name == "none":
        return optuna.pruners.NopPruner()
    if cfg.name in ("median", "percentile") and cfg.compare_at == "schedule_fraction":
        return ScheduleFractionPruner(
            50.0 if cfg.name == "median" else cfg.percentile, n_startup_trials=cfg.n_startup_trials,
            n_warmup_steps=cfg.n_warmup_steps, interval_steps=cfg.interval_steps, n_min_trials=cfg.n_min_trials,
        )
    if cfg.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps,
            interval_steps=cfg.interval_steps, n_min_trials=cfg.n_min_trials,
        )
    if cfg.name == "percentile":
        return optuna.pruners.PercentilePruner(
            cfg.percentile, n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps,
            interval_steps=cfg.interval_steps, n_min_trials=cfg.n_min_trials,
        )
    every = spec.eval_every_examples()
    min_resource = every if cfg.min_resource == "auto" else cfg.min_resource
    if cfg.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=cfg.reduction_factor
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource, max_resource=cfg.max_resource, reduction_factor=cfg.reduction_factor
    )


def create_study(store: optuna.storages.BaseStorage, name: str, spec: StudySpec) -> None:
    """The Optuna side of a new study. `enqueue_trials` are not queued in Optuna: slot i carries the i-th
    configuration (see `fixed_params`), so a configuration is never lost with an attempt that died."""
    optuna.create_study(storage=bounded(store), study_name=name, direction=spec.objective.direction,
                        sampler=make_sampler(spec), pruner=make_pruner(spec))


def fixed_params(spec: StudySpec, search_index: int) -> dict[str, Any] | None:
    """The enqueued configuration of the `search_index`-th search slot (`enqueue_trials[search_index]`), or None.
    Slots are counted among search slots only: confirm runs and extensions interleave trial numbers."""
    return dict(spec.enqueue_trials[search_index]) if search_index < len(spec.enqueue_trials) else None


def ask_for_slot(study: optuna.Study, spec: StudySpec, slot_id: int, number: int, lease: str,
                 search_index: int | None = None) -> optuna.trial.Trial:
    """A new RUNNING Optuna trial for our slot, created with its tags (slot, lease, enqueued configuration) in
    one write, the sampler seeded for the slot. Asked again with the same lease (a retry after a lost
    connection), it returns the trial that first call created instead of a second one. `search_index`: the
    slot's index among search slots (the claim's; default `number`, the same until confirm runs exist)."""
    existing = tagged_trials(study, slot_id, lease)
    if existing:
        return trial_for(study, spec, existing[0], number)
    attrs: dict[str, Any] = {SLOT_ATTR: slot_id, LEASE_ATTR: lease}
    fixed = fixed_params(spec, number if search_index is None else search_index)
    if fixed:
        attrs["fixed_params"] = fixed
    template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None,
                           datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                           distributions={}, user_attrs={}, system_attrs=attrs, intermediate_values={},
                           trial_id=-1)
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return trial_for(study, spec, trial_id, number)


def trial_for(study: optuna.Study, spec: StudySpec, trial_id: int, number: int) -> optuna.trial.Trial:
    """The Optuna trial `trial_id` to sample from (or resume), the sampler seeded for slot `number`."""
    study.sampler = make_sampler(spec, number)
    study._thread_local.cached_all_trials = None  # the sampler reads the history as it is now
    # Optuna's cached storage writes parameters only for trials it has read: one created by another process
    # (an earlier attempt's) is read here first.
    study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    return optuna.trial.Trial(study, trial_id)


def tagged_trials(study: optuna.Study, slot_id: int, lease: str | None = None) -> list[int]:
    """RUNNING Optuna trials created for our slot (and that lease, if given), oldest first."""
    found = []
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.system_attrs
        if attrs.get(SLOT_ATTR) == slot_id and (lease is None or attrs.get(LEASE_ATTR) == lease):
            found.append(t._trial_id)
    return sorted(found)


def trial_state(study: optuna.Study, trial_id: int) -> TrialState:
    return study._storage.get_trial(trial_id).state


def report(study: optuna.Study, trial_id: int, step: int, value: float) -> None:
    """The intermediate value at `step`, as our table holds it (idempotent: the same value may be written
    again by a retry or a resumed attempt). Nothing is written to a trial Optuna already finished."""
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished() or frozen.intermediate_values.get(step) == value:
        return
    try:
        storage.set_trial_intermediate_value(trial_id, step, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # ended meanwhile (the reconciler, after our lease was lost): nothing more to report


def set_planned_examples(study: optuna.Study, trial_id: int, planned: int) -> None:
    """The trial's planned examples (its whole schedule), for the schedule-fraction pruner: written once per
    trial (idempotent; a resumed attempt plans the same schedule), never to a trial Optuna already finished."""
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished() or frozen.user_attrs.get(PLANNED_ATTR) == planned:
        return
    try:
        storage.set_trial_user_attr(trial_id, PLANNED_ATTR, int(planned))
    except optuna.exceptions.UpdateFinishedTrialError:
        return


def sync_points(storage: optuna.storages.BaseStorage, trial_id: int, values: dict[int, float]) -> int:
    """Give an unfinished Optuna trial every intermediate value our table holds that it lacks (an attempt died
    between our write and Optuna's). Returns how many were added."""
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return 0
    missing = {step: v for step, v in values.items() if frozen.intermediate_values.get(step) != v}
    added = 0
    for step, value in sorted(missing.items()):
        try:
            storage.set_trial_intermediate_value(trial_id, step, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            break  # finished meanwhile (by its worker): too late, and nothing to repair
        added += 1
    return added


def should_prune(study: optuna.Study, trial_id: int) -> bool:
    frozen = study._storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return False
    return bool(study.pruner.prune(_PrunerView(study), frozen))


class _PrunerView:
    """The study as a pruner sees it: with a bounded storage, the unfinished trials and the most recent
    finished ones only (never the best-K extras the sampler also sees: they would bias a median upwards)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        store = self._study._storage
        if isinstance(store, BoundedStorage):
            return store.recent_trials(self._study._study_id, deepcopy=deepcopy, states=states)
        return self._study.get_trials(deepcopy=deepcopy, states=states)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        return self.get_trials(deepcopy=deepcopy, states=states)


def load_study(store: optuna.storages.BaseStorage, name: str, spec: StudySpec,
               history: HistoryBound | None = None) -> optuna.Study:
    """The study as a worker samples and prunes it: over a bounded view of its history (`history`)."""
    return optuna.load_study(storage=bounded(store, history), study_name=name, sampler=make_sampler(spec),
                             pruner=make_pruner(spec))


def delete_study(store: optuna.storages.BaseStorage, name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=store)
    except KeyError:
        pass


def sample_params(trial: optuna.trial.Trial, spec: StudySpec) -> dict[str, Any]:
    """Ask the trial for every searched hyperparameter; fixed ones are returned as given.
    Loss parameters are conditional: sampled as "<Loss>.<param>" only when that loss was picked."""
    def suggest(name: str, param: Any) -> Any:
        if isinstance(param, FloatDistribution):
            return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
        if isinstance(param, IntDistribution):
            return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
        if isinstance(param, CategoricalDistribution):
            return trial.suggest_categorical(name, param.choices)
        return param

    params = {name: suggest(name, p) for name, p in spec.search_space.params().items()}
    for pname, p in spec.search_space.loss_params.get(str(params["loss"]), {}).items():
        params[f"{params['loss']}.{pname}"] = suggest(f"{params['loss']}.{pname}", p)
    return params
