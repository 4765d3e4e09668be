"""One evaluator per task kind, and the objective value read from its results."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import (
    BinaryClassificationEvaluator,
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    TripletEvaluator,
)

from service.core.tasks import TASKS, TaskInfo
from workers.devices import full_precision

Evaluator = Any  # a sentence-transformers evaluator: callable(model) -> dict[str, float]


def build_evaluator(task: str | TaskInfo, data: Dataset, name: str, batch_size: int = 64) -> Evaluator:
    info = task if isinstance(task, TaskInfo) else TASKS[task]
    cols = {c: list(data[c]) for c in info.columns}
    if info.kind == "scored_pairs":
        return EmbeddingSimilarityEvaluator(cols["sentence1"], cols["sentence2"], [float(s) for s in cols["score"]],
                                            batch_size=batch_size, similarity_fn_names=["cosine"], name=name,
                                            write_csv=False)
    if info.kind == "labelled_pairs":
        return BinaryClassificationEvaluator(cols["sentence1"], cols["sentence2"], [int(x) for x in cols["label"]],
                                             name=name, batch_size=batch_size, write_csv=False,
                                             similarity_fn_names=["cosine"])
    if info.kind == "pairs":
        queries, corpus, relevant = retrieval_sets(cols["anchor"], cols["positive"])
        return InformationRetrievalEvaluator(queries, corpus, relevant, name=name, batch_size=batch_size,
                                             write_csv=False)
    if info.kind == "triplets":
        return TripletEvaluator(cols["anchor"], cols["positive"], cols["negative"], name=name,
                                batch_size=batch_size, write_csv=False, similarity_fn_names=["cosine"])
    raise ValueError(f"no evaluator for task {info.kind!r}")


def retrieval_sets(anchors: list[str], positives: list[str]) -> tuple[dict[str, str], dict[str, str],
                                                                         dict[str, set[str]]]:
    """Queries are the anchors, the corpus the (distinct) positives; each anchor is relevant to its own positive."""
    corpus_ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for i, (anchor, positive) in enumerate(zip(anchors, positives)):
        cid = corpus_ids.setdefault(positive, f"d{len(corpus_ids)}")
        qid = f"q{i}"
        queries[qid] = anchor
        relevant.setdefault(qid, set()).add(cid)
    corpus = {cid: text for text, cid in corpus_ids.items()}
    return queries, corpus, relevant


def strip_prefix(results: dict[str, Any], name: str) -> dict[str, float]:
    """Evaluator results with the evaluator's name prefix removed, numbers only."""
    prefix = f"{name}_" if name else ""
    out: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, (int, float)):
            out[key[len(prefix):] if prefix and key.startswith(prefix) else key] = float(value)
    return out


def metric_value(results: dict[str, Any], metric: str) -> float:
    """The value of `metric` in evaluator results whose keys may carry a "<name>_" prefix."""
    if metric in results:
        return float(results[metric])
    matches = [k for k in results if k.endswith("_" + metric)]
    if not matches:
        raise KeyError(f"metric {metric!r} not in evaluator results ({', '.join(sorted(results))})")
    return float(results[min(matches, key=len)])


def evaluate(evaluator: Evaluator, model: SentenceTransformer, metric: str) -> tuple[float, dict[str, float]]:
    """Run the evaluator, in float32 whatever the trial trains in (devices.full_precision); (objective value,
    all metrics without prefix). Leaves the model in eval mode."""
    with full_precision(model):
        results = evaluator(model)
    if not isinstance(results, dict):
        results = {metric: float(results)}
    return metric_value(results, metric), strip_prefix(results, getattr(evaluator, "name", ""))
