"""`TrialProgress`: the part of a trial's state the trainer does not keep itself (best value and weights,
early-stopping counter, reported points). It travels in every resumable checkpoint folder as
`stsweep_state.json` + `stsweep_best.safetensors`, beside the trainer's own files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "stsweep_state.json"
BEST_FILE = "stsweep_best.safetensors"
FORMAT = 1

StopReason = Literal["pruned", "interrupted", "early_stopped"]


@dataclass
class TrialProgress:
    best_value: float | None = None
    best_examples: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # copy of the best weights (see trial_callback.keep_state)
    best_metrics: dict[str, float] | None = None  # every metric of the best evaluation (on the eval subset)
    bad_evals: int = 0  # evaluations since the last improvement
    reported: set[int] = field(default_factory=set)
    last_value: float | None = None
    last_eval_examples: int = 0
    status: StopReason | None = None

    def save(self, folder: Path, examples_seen: int, global_step: int) -> None:
        meta = {"format": FORMAT, "examples_seen": examples_seen, "global_step": global_step,
                "best_value": self.best_value, "best_examples": self.best_examples, "bad_evals": self.bad_evals,
                "best_metrics": self.best_metrics,
                "reported": sorted(self.reported), "last_value": self.last_value,
                "last_eval_examples": self.last_eval_examples, "has_best_state": self.best_state is not None}
        if self.best_state is not None:
            save_file({k: v.contiguous() for k, v in self.best_state.items()}, str(folder / BEST_FILE))
        (folder / STATE_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> TrialProgress:
        meta = json.loads((Path(folder) / STATE_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: unknown checkpoint format {meta.get('format')!r}")
        best = load_file(str(Path(folder) / BEST_FILE)) if meta.get("has_best_state") else None
        return cls(best_value=meta["best_value"], best_examples=meta["best_examples"], best_state=best,
                   best_metrics=meta.get("best_metrics"),
                   bad_evals=int(meta["bad_evals"]), reported={int(x) for x in meta["reported"]},
                   last_value=meta["last_value"], last_eval_examples=int(meta["last_eval_examples"]))


__all__ = ["BEST_FILE", "STATE_FILE", "StopReason", "TrialProgress"]
