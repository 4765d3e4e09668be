"""What each task kind is: its columns, the losses that fit it, and its evaluator's metrics.

Plain data, no torch: the API validates studies against it and the workers build losses and evaluators from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["scored_pairs", "labelled_pairs", "pairs", "triplets"]


@dataclass(frozen=True)
class LossInfo:
    name: str
    # Tunable constructor arguments and their defaults; a study may fix or search each of them.
    params: dict[str, float] = field(default_factory=dict)
    # Losses with in-batch negatives want batches without duplicate texts.
    in_batch_negatives: bool = False


@dataclass(frozen=True)
class TaskInfo:
    kind: TaskKind
    columns: tuple[str, ...]
    label_column: str | None
    losses: tuple[LossInfo, ...]
    evaluator: str
    metrics: tuple[str, ...]
    primary_metric: str
    # Every metric here is "higher is better"; a study may still ask for the other direction.
    description: str

    def loss(self, name: str) -> LossInfo | None:
        return next((loss for loss in self.losses if loss.name == name), None)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(loss.name for loss in self.losses)

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != self.label_column)


_MNRL = LossInfo("MultipleNegativesRankingLoss", {"scale": 20.0}, in_batch_negatives=True)
_CACHED_MNRL = LossInfo(
    "CachedMultipleNegativesRankingLoss", {"scale": 20.0, "mini_batch_size": 32}, in_batch_negatives=True
)

TASKS: dict[str, TaskInfo] = {
    "scored_pairs": TaskInfo(
        kind="scored_pairs",
        columns=("sentence1", "sentence2", "score"),
        label_column="score",
        losses=(
            LossInfo("CoSENTLoss", {"scale": 20.0}),
            LossInfo("AnglELoss", {"scale": 20.0}),
            LossInfo("CosineSimilarityLoss"),
        ),
        evaluator="EmbeddingSimilarityEvaluator",
        metrics=("spearman_cosine", "pearson_cosine"),
        primary_metric="spearman_cosine",
        description="Sentence pairs with a similarity score in 0..1 (rescaled from data.score_range).",
    ),
    "labelled_pairs": TaskInfo(
        kind="labelled_pairs",
        columns=("sentence1", "sentence2", "label"),
        label_column="label",
        losses=(LossInfo("OnlineContrastiveLoss", {"margin": 0.5}), LossInfo("ContrastiveLoss", {"margin": 0.5})),
        evaluator="BinaryClassificationEvaluator",
        metrics=("cosine_ap", "cosine_accuracy", "cosine_f1", "cosine_precision", "cosine_recall"),
        primary_metric="cosine_ap",
        description="Sentence pairs labelled 1 (similar) or 0 (not).",
    ),
    "pairs": TaskInfo(
        kind="pairs",
        columns=("anchor", "positive"),
        label_column=None,
        losses=(_MNRL, _CACHED_MNRL),
        evaluator="InformationRetrievalEvaluator",
        metrics=("cosine_ndcg@10", "cosine_mrr@10", "cosine_map@100", "cosine_accuracy@1", "cosine_recall@10"),
        primary_metric="cosine_ndcg@10",
        description="(anchor, positive) pairs; other positives in the batch are the negatives.",
    ),
    "triplets": TaskInfo(
        kind="triplets",
        columns=("anchor", "positive", "negative"),
        label_column=None,
        losses=(_MNRL, LossInfo("TripletLoss", {"triplet_margin": 5.0})),
        evaluator="TripletEvaluator",
        metrics=("cosine_accuracy",),
        primary_metric="cosine_accuracy",
        description="(anchor, positive, negative) triplets.",
    ),
}
