"""Build a trial's loss from its sampled parameters ("loss", "CoSENTLoss.scale", ...)."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses as st_losses

from service.core.spec import CategoricalDistribution, FloatDistribution, IntDistribution, StudySpec
from service.core.tasks import TASKS, LossInfo

_INT_PARAMS = {"mini_batch_size"}


def loss_info(spec: StudySpec, params: dict[str, Any]) -> LossInfo:
    """The trial's loss: params["loss"], else the spec's fixed loss, else the task's first."""
    task = TASKS[spec.task]
    name = params.get("loss")
    if name is None:
        fixed = spec.search_space.loss
        name = fixed if isinstance(fixed, str) else task.losses[0].name
    info = task.loss(str(name))
    if info is None:
        raise ValueError(f"loss {name!r} does not fit task {spec.task} (choose from {', '.join(task.loss_names)})")
    return info


def loss_kwargs(spec: StudySpec, params: dict[str, Any], info: LossInfo) -> dict[str, Any]:
    """Constructor arguments: sampled "<Loss>.<param>", else a fixed value in the spec, else the task default."""
    fixed = spec.search_space.loss_params.get(info.name, {})
    kwargs: dict[str, Any] = {}
    for pname, default in info.params.items():
        value: Any = default
        spec_value = fixed.get(pname)
        if spec_value is not None and not isinstance(spec_value, (FloatDistribution, IntDistribution,
                                                                  CategoricalDistribution)):
            value = spec_value
        value = params.get(f"{info.name}.{pname}", value)
        kwargs[pname] = int(value) if pname in _INT_PARAMS else float(value)
    return kwargs


def build_loss(spec: StudySpec, params: dict[str, Any], model: SentenceTransformer) -> torch.nn.Module:
    info = loss_info(spec, params)
    cls = getattr(st_losses, info.name)
    return cls(model, **loss_kwargs(spec, params, info))


def needs_no_duplicates(spec: StudySpec, params: dict[str, Any]) -> bool:
    """In-batch-negative losses want BatchSamplers.NO_DUPLICATES."""
    return loss_info(spec, params).in_batch_negatives
