"""The trainer callback that evaluates at examples-seen points, reports, early-stops, prunes and checkpoints.

`TrialProgress` is the part of a trial's state the trainer does not keep itself (best value and weights,
early-stopping counter, reported points); it travels in every checkpoint folder as `stsweep_state.json` +
`stsweep_best.safetensors`, beside the trainer's own files.

Per trial, as little as possible on the training thread: the best weights are copied into buffers allocated at
the first improvement (on the GPU when training there and there is room, so an improvement is a device-to-device
copy), and a checkpoint folder, once written, is uploaded on a background thread (workers/checkpoint_upload.py).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from service.core.errors import InvalidInput
from service.core.numeric_limits import INT32_MAX
from workers.checkpoint_upload import BackgroundUpload
from workers.contract import TrialHooks
from workers.prepared import PreparedStudy

STATE_FILE = "stsweep_state.json"
BEST_FILE = "stsweep_best.safetensors"
FORMAT = 1

StopReason = Literal["pruned", "interrupted", "early_stopped"]


@dataclass
class TrialProgress:
    best_value: float | None = None
    best_examples: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # copy of the best weights (see `keep_state`)
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


def keep_state(model: torch.nn.Module, into: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The model's weights copied into `into` when its tensors fit (same names, shapes and dtypes, kept on the
    CPU or on the weights' own device), so only the first improvement of a trial allocates; else into new
    tensors: on the model's CUDA device when twice their size is free there (an improvement is then a device
    copy, ordered on the stream before the next training step), on the CPU otherwise."""
    state = model.state_dict()
    with torch.no_grad():
        if into is not None and _fits(into, state):
            for name, value in state.items():
                into[name].copy_(value)
            return into
        place = _place_for(state)
        return {k: v.detach().to(place, copy=True) for k, v in state.items()}


def _fits(into: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> bool:
    return into.keys() == state.keys() and all(
        into[k].shape == v.shape and into[k].dtype == v.dtype and into[k].device in (v.device, _CPU)
        for k, v in state.items())


def _place_for(state: dict[str, torch.Tensor]) -> torch.device:
    devices = {v.device for v in state.values()}
    if len(devices) != 1:
        return _CPU
    (device,) = devices
    if device.type != "cuda":
        return _CPU
    size = sum(v.numel() * v.element_size() for v in state.values())
    free, _total = torch.cuda.mem_get_info(device)
    return device if free > 2 * size else _CPU


_CPU = torch.device("cpu")


class TrialCallback(TrainerCallback):
    def __init__(self, prepared: PreparedStudy, hooks: TrialHooks, progress: TrialProgress, *, eval_every: int,
                 examples_per_step: int, patience: int | None, threshold: float) -> None:
        self.prepared = prepared
        self.hooks = hooks
        self.progress = progress
        self.eval_every = eval_every
        self.examples_per_step = examples_per_step
        self.patience = patience
        self.threshold = threshold
        self.examples_seen = 0
        self.planned_examples = 0
        self.next_point = 1  # k of the next evaluation point k * eval_every
        self.uploads = BackgroundUpload(hooks.save_checkpoint)

    # -------------------------------------------------------------- evaluation, best state

    def evaluate(self, model: SentenceTransformer) -> tuple[float, dict[str, float]]:
        return self.prepared.evaluate_subset(model)

    def consider(self, model: SentenceTransformer, value: float, examples: int,
                 metrics: dict[str, float] | None = None) -> None:
        """Update best state and the early-stopping counter with an evaluation of the current model."""
        p = self.progress
        p.last_eval_examples = examples
        if not math.isfinite(value):  # a diverged model (NaN embeddings) never becomes the best
            p.bad_evals += 1
            return
        if p.best_value is None or self.prepared.is_better(value, p.best_value, self.threshold):
            p.best_value, p.best_examples, p.bad_evals, p.best_metrics = value, examples, 0, metrics
            p.best_state = keep_state(model, p.best_state)
        else:
            p.bad_evals += 1
            # A tiny gain below the threshold does not reset patience, but the better weights are still kept.
            if self.prepared.is_better(value, p.best_value):
                p.best_value, p.best_examples, p.best_metrics = value, examples, metrics
                p.best_state = keep_state(model, p.best_state)

    # -------------------------------------------------------------- trainer events

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.planned_examples = state.max_steps * self.examples_per_step
        if self.planned_examples > INT32_MAX:  # the API cannot see a path's or a hub split's row count
            raise InvalidInput(f"the trial would train {self.planned_examples} examples, but steps count examples "
                               f"and Optuna stores them as 32-bit integers (at most {INT32_MAX}): lower "
                               "num_train_epochs or data.max_train_samples", field="search_space.num_train_epochs")
        self.examples_seen = state.global_step * self.examples_per_step
        self.next_point = self.examples_seen // self.eval_every + 1

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: SentenceTransformer | None = None, **kwargs: Any) -> TrainerControl:
        self.examples_seen = examples = state.global_step * self.examples_per_step
        self.uploads.check()  # a checkpoint upload that failed raises here, as it did inside on_save before
        self.hooks.progress(examples, self.planned_examples)
        last_k = examples // self.eval_every
        if last_k >= self.next_point and model is not None:
            points = [k * self.eval_every for k in range(self.next_point, last_k + 1)]
            self.next_point = last_k + 1
            if self._evaluate_at(model, points, examples, control):
                return control
        if self.hooks.interrupted():
            self.progress.status = "interrupted"
            control.should_save = True
            control.should_training_stop = True
        return control

    def _evaluate_at(self, model: SentenceTransformer, points: list[int], examples: int,
                     control: TrainerControl) -> bool:
        """Evaluate, report each nominal point crossed, update best/patience. True when training must stop."""
        p = self.progress
        value, metrics = self.evaluate(model)
        p.last_value = value
        for point in points:
            if point in p.reported:
                continue
            p.reported.add(point)
            if self.hooks.report(point, value):
                p.status = "pruned"
                control.should_training_stop = True
                return True
        self.consider(model, value, examples, metrics)
        if self.patience is not None and p.bad_evals >= self.patience:
            p.status = "early_stopped"
            control.should_training_stop = True
            return True
        if self.hooks.checkpoint_due():
            control.should_save = True
        return False

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        run_dir = Path(args.output_dir)
        folder = run_dir / f"checkpoint-{state.global_step}"
        # Synchronous, like the trainer's own files: the best weights' buffers change at the next improvement.
        self.progress.save(folder, self.examples_seen, state.global_step)
        self.uploads.wait()  # the previous upload is over: its folder may go
        for old in run_dir.glob("checkpoint-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        self.uploads.start(folder, self.examples_seen)

    def finish_uploads(self) -> None:
        """Wait for the checkpoint upload in flight, if any, and raise its error (before the trial's result is
        handed back: the loop finishes or releases the trial only once its checkpoint is stored or skipped)."""
        self.uploads.wait()

    def release(self) -> None:
        """Once the trial is over: no upload left running (its error logged), no reference to big objects."""
        self.uploads.drain()
        self.progress.best_state = None
