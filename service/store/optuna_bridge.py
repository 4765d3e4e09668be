"""Optuna behind our back: its storage (own schema), the study's sampler and pruner rebuilt from the spec.

Optuna does not persist samplers or pruners, so every process rebuilds them from the stored spec.
Steps are examples seen, so pruner settings given in examples line up across batch sizes.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.core.spec import CategoricalDistribution, FloatDistribution, IntDistribution, StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A trial that ran out of device memory is told to Optuna as PRUNED with this constraint violated (> 0):
# TPE then puts it among the infeasible trials and steers away, where a FAIL would just be ignored.
INFEASIBLE_CONSTRAINT = "fits_device_memory"


def ensure_schema(database_url: str, schema: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()


@functools.lru_cache(maxsize=8)
def storage(database_url: str, schema: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the same server, its tables (and its alembic_version) in their own schema."""
    ensure_schema(database_url, schema)
    url = make_url(database_url).render_as_string(hide_password=False)
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs={
            "pool_pre_ping": True,
            "connect_args": {"options": f"-csearch_path={schema}", "connect_timeout": 5},
        },
    )


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    cfg = spec.sampler
    seed = cfg.seed
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
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
    study = optuna.create_study(storage=store, study_name=name, direction=spec.objective.direction,
                                sampler=make_sampler(spec), pruner=make_pruner(spec))
    for params in spec.enqueue_trials:
        study.enqueue_trial(params, skip_if_exists=False)


def load_study(store: optuna.storages.BaseStorage, name: str, spec: StudySpec) -> optuna.Study:
    return optuna.load_study(storage=store, study_name=name, sampler=make_sampler(spec), pruner=make_pruner(spec))


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
