"""A resumable checkpoint taken in memory on the training thread, written to a folder on another thread.

`take_snapshot` is all the training thread pays: every tensor of the training state (weights, optimizer,
the best weights kept so far) copied to CPU memory (from a GPU into pinned host memory, with non-blocking copies
and one synchronisation at the end), the small state (scheduler, scaler, RNG, trainer state, our progress)
deep-copied. `TrainingSnapshot.write(folder)` then writes exactly the folder the trainer's own
`_save_checkpoint` would (plus our `stsweep_state.json` / `stsweep_best.safetensors`), so resuming is the
trainer's own `train(resume_from_checkpoint=folder)`, and folders written by earlier versions still resume.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from transformers import Trainer, TrainerState
from transformers.trainer_callback import ExportableState

from workers.trial_progress import TrialProgress

# The trainer's file names (transformers/trainer.py), which its resume reads.
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
RNG_STATE_NAME = "rng_state.pth"
TRAINER_STATE_NAME = "trainer_state.json"

Shell = Callable[[], SentenceTransformer]  # a CPU model of the trained architecture, to write weights through


@dataclass
class TrainingSnapshot:
    global_step: int
    examples_seen: int
    model: dict[str, torch.Tensor]  # the model's state dict, in CPU memory
    max_seq_length: int | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    trainer_state: TrainerState
    progress: TrialProgress  # best weights (if any) in CPU memory

    def write(self, folder: Path, shell: Shell) -> None:
        """The trainer's checkpoint folder: model (as `save_pretrained` writes it), optimizer, scheduler, scaler,
        RNG and trainer state, then our progress files. Runs on the writer thread."""
        folder.mkdir(parents=True, exist_ok=True)
        model = shell()
        model.load_state_dict(self.model, assign=True)  # the snapshot's tensors, not copies of them
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        model.save_pretrained(str(folder), create_model_card=False)
        del model
        torch.save(self.optimizer, folder / OPTIMIZER_NAME)
        if self.scheduler is not None:
            with warnings.catch_warnings():  # the scheduler's "please also save the optimizer" warning
                warnings.simplefilter("ignore", UserWarning)
                torch.save(self.scheduler, folder / SCHEDULER_NAME)
        if self.scaler is not None:
            torch.save(self.scaler, folder / SCALER_NAME)
        torch.save(self.rng, folder / RNG_STATE_NAME)
        self.trainer_state.save_to_json(str(folder / TRAINER_STATE_NAME))
        self.progress.save(folder, self.examples_seen, self.global_step)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held (what the copy moved)."""
        return _tensor_bytes([self.model, self.optimizer, self.progress.best_state])


def take_snapshot(trainer: Trainer, model: SentenceTransformer, progress: TrialProgress,
                  examples_seen: int) -> TrainingSnapshot:
    """Copy the training state at this step into memory (the training thread's whole share of a checkpoint)."""
    if trainer.hp_search_backend is None:
        trainer.store_flos()  # as the trainer's own _save_checkpoint does
    _export_callback_states(trainer)
    copier = _HostCopier()
    scaler = getattr(trainer.accelerator, "scaler", None)
    snapshot = TrainingSnapshot(
        global_step=trainer.state.global_step,
        examples_seen=examples_seen,
        model=copier.tree(model.state_dict()),
        max_seq_length=getattr(model, "max_seq_length", None),
        optimizer=copier.tree(trainer.optimizer.state_dict()),
        scheduler=copier.tree(trainer.lr_scheduler.state_dict()) if trainer.lr_scheduler is not None else None,
        scaler=copier.tree(scaler.state_dict()) if scaler is not None else None,
        rng=_rng_states(),
        trainer_state=copy.deepcopy(trainer.state),
        progress=dataclasses.replace(progress, reported=set(progress.reported),
                                     best_metrics=copy.deepcopy(progress.best_metrics),
                                     best_state=copier.tree(progress.best_state)),
    )
    copier.finish()
    return snapshot


class _HostCopier:
    """Copies tensors to CPU memory: CPU tensors cloned; CUDA tensors into pinned host memory without waiting,
    then `finish()` waits once for every copy it started."""

    def __init__(self) -> None:
        self.devices: set[torch.device] = set()

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.device.type == "cpu":
            if t.is_contiguous() and t.numel() > 0:
                # numpy's memcpy, on this thread: torch's own copy of a big tensor is split over its thread
                # pool, and waits on it; with the cores busy (training, other processes) that was 5-20x slower.
                flat = t.reshape(-1).view(torch.uint8).numpy().copy()
                return torch.from_numpy(flat).view(t.dtype).reshape(t.shape)
            return t.clone(memory_format=torch.contiguous_format)
        if t.device.type == "cuda":
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
            host.copy_(t, non_blocking=True)
            self.devices.add(t.device)
            return host
        return t.to("cpu", copy=True)

    def tree(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self.tensor(obj)
        if isinstance(obj, dict):
            return {k: self.tree(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.tree(v) for v in obj]
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return tuple(self.tree(v) for v in obj)
        return copy.deepcopy(obj)

    def finish(self) -> None:
        for device in self.devices:
            torch.cuda.current_stream(device).synchronize()  # the copies ran on the current stream, in order


def _rng_states() -> dict[str, Any]:
    """What the trainer's _save_rng_state keeps on one process (CPU or one GPU)."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state()
    return states


def _export_callback_states(trainer: Trainer) -> None:
    """The trainer's own bookkeeping before it writes trainer_state.json: stateful callbacks' states."""
    for cb in [*trainer.callback_handler.callbacks, trainer.control]:
        if not isinstance(cb, ExportableState):
            continue
        name, cb_state = cb.__class__.__name__, cb.state()
        if isinstance(trainer.state.stateful_callbacks.get(name), list):
            trainer.state.stateful_callbacks[name].append(cb_state)
        else:
            trainer.state.stateful_callbacks[name] = cb_state


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


__all__ = ["TrainingSnapshot", "take_snapshot"]
