"""The trainer callback that evaluates at examples-seen points, reports, early-stops, prunes and checkpoints.

Per trial, as little as possible on the training thread: the best weights are copied into buffers allocated at
the first improvement (on the GPU when training there and there is room, so an improvement is a device-to-device
copy); a resumable checkpoint costs the training thread only the copy of its state into memory
(workers/checkpoint_snapshot.py): writing, packing and uploading it happen on a writer thread, one at a time
(workers/checkpoint_writer.py), and how often is decided by workers/checkpoint_policy.py.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from service.core.errors import InvalidInput
from service.core.numeric_limits import INT32_MAX
from workers.checkpoint_policy import CheckpointPolicy
from workers.checkpoint_snapshot import take_snapshot
from workers.checkpoint_writer import CheckpointWriter
from workers.contract import TrialHooks
from workers.prepared import PreparedStudy
from workers.trial_progress import BEST_FILE, STATE_FILE, StopReason, TrialProgress

log = logging.getLogger(__name__)


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
                 examples_per_step: int, patience: int | None, threshold: float,
                 checkpoints: CheckpointPolicy | None = None) -> None:
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
        self.policy = checkpoints if checkpoints is not None else CheckpointPolicy(math.inf)
        self.writer = CheckpointWriter(hooks.save_checkpoint)
        self.last_checkpoint = time.monotonic()  # end of the last checkpoint's copy (or the start of training)
        self.copy_seconds: list[float] = []  # the training thread's cost of each checkpoint, in order
        self.skipped = 0  # checkpoints due while the previous one was still being written

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
        self.last_checkpoint = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: SentenceTransformer | None = None, **kwargs: Any) -> TrainerControl:
        self.examples_seen = examples = state.global_step * self.examples_per_step
        self.writer.check()  # a checkpoint job that failed raises here, as it did inside on_save before
        self._measure_writer()
        self.hooks.progress(examples, self.planned_examples)
        last_k = examples // self.eval_every
        evaluated = False
        if last_k >= self.next_point and model is not None:
            points = [k * self.eval_every for k in range(self.next_point, last_k + 1)]
            self.next_point = last_k + 1
            if self._evaluate_at(model, points, examples, control):
                return control
            evaluated = True
        if self.hooks.interrupted():
            self.progress.status = "interrupted"
            control.should_save = True
            control.should_training_stop = True
        elif self.policy.due(time.monotonic() - self.last_checkpoint, evaluated):
            self._checkpoint_due(control, examples)
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
        return False

    def _checkpoint_due(self, control: TrainerControl, examples: int) -> None:
        """A periodic checkpoint is due: taken now, unless the previous one is still being written (then it is
        skipped, and the next one is due an interval later), except at every evaluation (interval 0), where it
        waits for the previous one as it always did."""
        if self.writer.busy and not self.policy.every_evaluation:
            self.skipped += 1
            self.last_checkpoint = time.monotonic()
            log.debug("resumable checkpoint at %d examples skipped: the previous one is still being written",
                      examples)
            return
        control.should_save = True

    # -------------------------------------------------------------- checkpoints

    def take_checkpoint(self, trainer: Trainer, model: SentenceTransformer) -> None:
        """The trainer's `_save_checkpoint` (training/_Trainer): copy the state into memory and hand it to the
        writer thread. The checkpoint of an interrupted trial replaces one still being written."""
        if self.progress.status == "interrupted":
            self.writer.abandon()  # the newer state supersedes it; its object, if uploaded, is deleted
        else:
            self.writer.wait()  # only at every evaluation (interval 0) can one still be in flight here
        self._measure_writer()
        since = time.monotonic() - self.last_checkpoint
        started = time.perf_counter()
        snapshot = take_snapshot(trainer, model, self.progress, self.examples_seen)
        took = time.perf_counter() - started
        self.last_checkpoint = time.monotonic()
        self.copy_seconds.append(took)
        self.policy.measured_copy(took)
        folder = Path(trainer.args.output_dir) / f"checkpoint-{snapshot.global_step}"
        self.writer.start(folder, snapshot.examples_seen, lambda path: snapshot.write(path, self._shell))
        log.debug("checkpoint at %d examples: %.0f MiB copied in %.3f s on the training thread (%.2f%% of the "
                  "%.0f s since the last); next in %.0f s", snapshot.examples_seen, snapshot.nbytes / 2**20, took,
                  100 * took / since if since > 0 else 0.0, since, self.policy.interval())

    def _shell(self) -> SentenceTransformer:
        """A CPU model of the trained architecture for the writer to save a snapshot's weights through: a copy of
        the study's pristine base model (never trained, so the writer thread may copy it at any time)."""
        return self.prepared.fresh_model("cpu")

    def _measure_writer(self) -> None:
        seconds = self.writer.pop_cpu_seconds()
        if seconds is not None:
            self.policy.measured_writer(seconds)

    def checkpoints_needed(self) -> bool:
        """Whether the checkpoint in flight at the end of training is still of use: only an interrupted trial
        resumes from it (a completed, pruned or early-stopped one deletes its resumable checkpoint)."""
        return self.progress.status == "interrupted"

    def finish_checkpoints(self) -> None:
        """At the end of training, before the trial's result is handed back: the checkpoint in flight is
        completed (and its error raised) when `checkpoints_needed()`, else abandoned (see `abandon_checkpoint`)."""
        if self.checkpoints_needed():
            self.writer.wait()
        else:
            self.writer.abandon()

    def abandon_checkpoint(self) -> None:
        """Tell the checkpoint in flight, if no longer needed, to stop at its next stage (without waiting)."""
        if not self.checkpoints_needed():
            self.writer.abandon(wait=False)

    def release(self) -> None:
        """Once the trial is over: no checkpoint job left running (its error logged), no reference to big
        objects."""
        self.writer.drain()
        self.progress.best_state = None


__all__ = ["BEST_FILE", "STATE_FILE", "StopReason", "TrialCallback", "TrialProgress", "keep_state"]
