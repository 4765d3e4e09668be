"""Build a study's train / eval / eval-subset / test datasets from its DataSpec.

Every random choice (split, train subset, eval subset) is seeded from the spec, so every trial of a study (and
every worker) sees exactly the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Dataset

from service.core.errors import InvalidInput
from service.core.body_limits import hub_id_problem, hub_name_problem
from service.core.spec import DataRef, DataSpec, StudySpec
from service.core.limits import DEFAULT_LIMITS, ReadLimits
from service.core.tabular import read_table, to_records
from service.core.tasks import TASKS, TaskInfo
from workers.hub_data import load_hub_split

Records = dict[str, list[Any]]
Resolver = Callable[[DataRef], Path]


@dataclass
class StudyData:
    train: Dataset
    eval: Dataset  # the full eval split: the objective of a finished trial
    eval_subset: Dataset  # max_eval_samples random rows of eval: intermediate values, pruning, early stopping
    test: Dataset | None = None


def build_datasets(spec: StudySpec, resolve: Resolver, limits: ReadLimits | None = None) -> StudyData:
    """`limits`: what each file may decode to (the worker passes its settings' `read_limits()`, the same
    limits an upload was checked with; default: the settings' defaults)."""
    info = TASKS[spec.task]
    data = spec.data
    if data.split is not None:
        source = load_ref(data.split.source, "data.split.source", info, data, resolve, limits)
        train, eval_, test = split_records(source, data.split.eval_fraction, data.split.test_fraction,
                                           data.split.seed)
    else:
        assert data.train is not None and data.eval is not None
        train = load_ref(data.train, "data.train", info, data, resolve, limits)
        eval_ = load_ref(data.eval, "data.eval", info, data, resolve, limits)
        test = load_ref(data.test, "data.test", info, data, resolve, limits) if data.test is not None else None
    if data.max_train_samples is not None:
        train = subset(train, data.max_train_samples, data.seed)
    eval_subset = eval_ if spec.evaluation.max_eval_samples is None else subset(
        eval_, spec.evaluation.max_eval_samples, spec.seed)
    return StudyData(train=to_dataset(train, info), eval=to_dataset(eval_, info),
                     eval_subset=to_dataset(eval_subset, info),
                     test=to_dataset(test, info) if test is not None and n_rows(test) else None)


def load_ref(ref: DataRef, field: str, info: TaskInfo, data: DataSpec, resolve: Resolver,
             limits: ReadLimits | None = None) -> Records:
    """One referenced data set as validated canonical records (scores rescaled to 0..1). A file without a
    header (`header: false`) is read by the same reader as an upload, its roles by position (data.columns)."""
    if ref.hf is not None:
        table = _load_hf(ref, field, limits)
    else:
        path = resolve(ref)
        if not Path(path).is_file():
            raise InvalidInput(f"{path} does not exist", field=f"{field}.{'path' if ref.path else 'dataset_id'}")
        table = read_table(Path(path), header=ref.header, columns=data.columns, limits=limits)
    return to_records(table, info, data.columns, data.score_range, field=field)


def _load_hf(ref: DataRef, field: str, limits: ReadLimits | None) -> pa.Table:
    """A hub dataset, read from its own repository only (workers/hub_data.py): the id, split and config are
    checked again here (the spec in the database is not trusted to have passed submission)."""
    hf = ref.hf or ""
    problem = hub_id_problem(hf) if hf else "a hub dataset id is required"
    if problem is not None:
        raise InvalidInput(problem, field=f"{field}.hf")
    for name, value in (("split", ref.split or ""), ("config", ref.config)):
        why = None if value is None else hub_name_problem(value, name)
        if why is not None:
            raise InvalidInput(why, field=f"{field}.{name}")
    return load_hub_split(hf, ref.config, ref.split or "", f"{field}.hf", limits or DEFAULT_LIMITS)


def n_rows(records: Records) -> int:
    return len(next(iter(records.values()))) if records else 0


def take(records: Records, indices: list[int]) -> Records:
    return {k: [v[i] for i in indices] for k, v in records.items()}


def subset(records: Records, n: int, seed: int) -> Records:
    """n rows drawn at random (seeded) without replacement, kept in file order; all rows when n >= len."""
    total = n_rows(records)
    if n >= total:
        return records
    return take(records, sorted(random.Random(seed).sample(range(total), n)))


def split_records(records: Records, eval_fraction: float, test_fraction: float,
                  seed: int) -> tuple[Records, Records, Records | None]:
    """Shuffle (seeded) and cut into train / eval / test; eval gets at least one row, train keeps at least one."""
    total = n_rows(records)
    if total < 2:
        raise InvalidInput("the split source needs at least 2 rows", field="data.split.source")
    order = list(range(total))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(total * eval_fraction))
    n_test = max(1, round(total * test_fraction)) if test_fraction > 0 else 0
    if n_eval + n_test >= total:
        n_test = max(0, total - n_eval - 1)
    eval_idx = sorted(order[:n_eval])
    test_idx = sorted(order[n_eval:n_eval + n_test])
    train_idx = sorted(order[n_eval + n_test:])
    test = take(records, test_idx) if n_test else None
    return take(records, train_idx), take(records, eval_idx), test


def to_dataset(records: Records, info: TaskInfo) -> Dataset:
    """A datasets.Dataset with the task's columns in the task's order (the order the loss expects)."""
    return Dataset.from_dict({c: records[c] for c in info.columns})
