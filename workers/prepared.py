"""What a worker keeps warm between trials of one study: the base model, the datasets and the evaluators."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from sentence_transformers import SentenceTransformer

from service.core.limits import ReadLimits
from service.core.spec import StudySpec
from workers.data import Resolver, StudyData, build_datasets
from workers.evaluation import Evaluator, build_evaluator, evaluate
from workers.modelref import load_model, resolve_model
from workers.token_cache import TokenCache

log = logging.getLogger(__name__)


class PreparedStudy:
    """Built once per (worker, study); every trial then starts from `fresh_model()` in a fraction of a second."""

    def __init__(self, spec: StudySpec, resolve: Resolver, device: str = "cpu",
                 data: StudyData | None = None, limits: ReadLimits | None = None,
                 models_root: Path | None = None) -> None:
        """`models_root`: the only folder a base_model folder may lie in (STSWEEP_MODELS_ROOT; None: only hub
        ids and the bundled model load)."""
        self.spec = spec
        self.device = device
        self.metric: str = spec.objective.metric or ""
        self.maximize = spec.objective.direction == "maximize"
        self.data = data if data is not None else build_datasets(spec, resolve, limits)
        # The pristine base model stays on the CPU and is never trained; trials get deep copies.
        self._base = load_model(resolve_model(spec.base_model, models_root), device="cpu")
        self._base.eval()
        self.subset_evaluator: Evaluator = build_evaluator(spec.task, self.data.eval_subset, "subset")
        self.full_evaluator: Evaluator = build_evaluator(spec.task, self.data.eval, "eval")
        # max_eval_samples >= the eval split's rows: the subset is the split itself, so a best state or the
        # baseline scored on the subset needs no second pass over the same rows.
        self.subset_is_full = self.data.eval_subset.num_rows == self.data.eval.num_rows
        self.test_evaluator: Evaluator | None = (
            build_evaluator(spec.task, self.data.test, "test") if self.data.test is not None else None)
        self._baseline: tuple[float, float] | None = None
        # Token ids of the training texts, filled by the first trial, read by the next ones (training.py).
        self.token_cache = TokenCache()

    @property
    def train_dataset(self):  # noqa: ANN201 - datasets.Dataset
        return self.data.train

    def fresh_model(self, device: str | None = None) -> SentenceTransformer:
        """A copy of the untouched base model on `device` (default: the study's device)."""
        model = copy.deepcopy(self._base)
        return model.to(device or self.device)

    def is_better(self, value: float, best: float | None, threshold: float = 0.0) -> bool:
        """Whether `value` improves on `best` by more than `threshold` in the objective's direction."""
        if best is None:
            return True
        return (value - best > threshold) if self.maximize else (best - value > threshold)

    # -------------------------------------------------------------- evaluation

    def evaluate_subset(self, model: SentenceTransformer) -> tuple[float, dict[str, float]]:
        return evaluate(self.subset_evaluator, model, self.metric)

    def evaluate_full(self, model: SentenceTransformer) -> tuple[float, dict[str, float]]:
        return evaluate(self.full_evaluator, model, self.metric)

    def evaluate_test(self, model: SentenceTransformer) -> tuple[float, dict[str, float]] | None:
        if self.test_evaluator is None:
            return None
        return evaluate(self.test_evaluator, model, self.metric)

    def baseline(self) -> tuple[float, float]:
        """The base model's objective on the eval subset and the full eval split, without training (cached)."""
        if self._baseline is None:
            model = self.fresh_model()
            subset_value, _ = self.evaluate_subset(model)
            full_value = subset_value if self.subset_is_full else self.evaluate_full(model)[0]
            self._baseline = (subset_value, full_value)
            del model
        return self._baseline


def prepare(spec: StudySpec, resolve: Resolver, device: str, limits: ReadLimits | None = None,
            models_root: Path | None = None) -> PreparedStudy:
    log.info("preparing study %s on %s", spec.name, device)
    return PreparedStudy(spec, resolve, device, limits=limits, models_root=models_root)

