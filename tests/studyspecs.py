"""Study bodies used across tests."""

from __future__ import annotations

import copy
from typing import Any

CONTRACT_EXAMPLE: dict[str, Any] = {
    "name": "minilm-stsb",
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "task": "scored_pairs",
    "data": {"train": {"path": "stsb/train.jsonl"}, "eval": {"path": "stsb/dev.jsonl"},
             "test": {"path": "stsb/test.jsonl"},
             "columns": {"sentence1": "sentence1", "sentence2": "sentence2", "score": "score"}},
    "objective": {"metric": "spearman_cosine", "direction": "maximize"},
    "search_space": {
        "learning_rate": {"distribution": "float", "low": 1e-6, "high": 1e-4, "log": True},
        "per_device_train_batch_size": {"distribution": "categorical", "choices": [16, 32, 64]},
        "num_train_epochs": {"distribution": "int", "low": 1, "high": 3},
        "warmup_ratio": {"distribution": "float", "low": 0.0, "high": 0.2},
        "weight_decay": 0.01,
        "loss": {"distribution": "categorical", "choices": ["CoSENTLoss", "CosineSimilarityLoss"]}},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "median"},
    "evaluation": {"every_n_examples": 256, "max_eval_samples": 500, "early_stopping_patience": 3},
    "budget": {"n_trials": 20, "max_concurrent_trials": 4},
    "max_attempts": 3,
}


def contract_study(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(CONTRACT_EXAMPLE)
    body.update(overrides)
    return body
