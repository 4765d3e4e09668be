"""Run one trial: fine-tune a fresh copy of the base model with the sampled hyperparameters.

Evaluation points are counted in training EXAMPLES (global_step * batch size * gradient accumulation), every
`spec.eval_every_examples()`; values are reported at the nominal points k*N so trials with different batch sizes
line up for the pruner. The best state on the eval subset is kept (early stopping), scored on the full eval split
and saved. Checkpoints use the trainer's own format (weights, optimizer, scheduler, RNG, trainer state) plus our
`stsweep_state.json` and best weights, and resume through `trainer.train(resume_from_checkpoint=...)`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import (
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.training_args import BatchSamplers
from transformers import PrinterCallback
from transformers.utils import logging as hf_logging

from service.core.spec import (
    CATEGORICAL_HYPERPARAMETERS,
    HYPERPARAMETERS,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    StudySpec,
)
from workers.checkpoint_policy import CheckpointPolicy
from workers.contract import TrialHooks, TrialOutcome, TrialRun
from workers.devices import Precision, free_memory, precision_for
from workers.losses import build_loss, needs_no_duplicates
from workers.prepared import PreparedStudy
from workers.token_cache import TokenCache
from workers.trial_callback import TrialCallback, TrialProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float
    batch_size: int
    epochs: float
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    lr_scheduler_type: str
    optim: str
    grad_accum: int
    max_seq_length: int | None

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum  # * world size, which is 1


def hyperparameters(spec: StudySpec, params: dict[str, Any]) -> Hyperparameters:
    """Sampled values from `params`; the rest from the spec's fixed values, else the defaults."""

    def value(name: str) -> Any:
        if name in params and params[name] is not None:
            return params[name]
        fixed = getattr(spec.search_space, name, None)
        if fixed is not None and not isinstance(fixed, (FloatDistribution, IntDistribution,
                                                        CategoricalDistribution)):
            return fixed
        if name in HYPERPARAMETERS:
            return HYPERPARAMETERS[name][0]
        return CATEGORICAL_HYPERPARAMETERS[name][0]

    max_len = value("max_seq_length")
    return Hyperparameters(
        learning_rate=float(value("learning_rate")),
        batch_size=int(value("per_device_train_batch_size")),
        epochs=float(value("num_train_epochs")),
        warmup_ratio=float(value("warmup_ratio")),
        weight_decay=float(value("weight_decay")),
        max_grad_norm=float(value("max_grad_norm")),
        lr_scheduler_type=str(value("lr_scheduler_type")),
        optim=str(value("optim")),
        grad_accum=int(value("gradient_accumulation_steps")),
        max_seq_length=int(max_len) if max_len is not None else None,
    )


CheckpointSink = Callable[[SentenceTransformerTrainer, SentenceTransformer], None]


class _Trainer(SentenceTransformerTrainer):
    """The stock trainer without model cards (slow, and they look things up on the hub), whose collator reads
    the study's token cache (workers/token_cache.py) instead of tokenizing every batch again, and whose
    checkpoints go to `checkpoint_sink` (TrialCallback.take_checkpoint: copied in memory, written elsewhere)."""

    def __init__(self, *args: Any, token_cache: TokenCache | None = None,
                 checkpoint_sink: CheckpointSink | None = None, **kwargs: Any) -> None:
        self._token_cache = token_cache  # before super().__init__, which builds the collator
        self.checkpoint_sink = checkpoint_sink  # None: the trainer's own synchronous checkpoint
        super().__init__(*args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.checkpoint_sink is None:
            super()._save_checkpoint(model, trial)
        else:
            self.checkpoint_sink(self, self.model)

    def get_data_collator(self, model: Any, args: Any, processing_class: Any = None) -> Any:
        collator = super().get_data_collator(model, args, processing_class)
        if self._token_cache is not None:
            collator.preprocess_fn = self._token_cache.preprocess_fn(model, collator.preprocess_fn)
        return collator

    def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
        return None

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, create_model_card=False)


def training_arguments(run: TrialRun, hp: Hyperparameters, device: str) -> SentenceTransformerTrainingArguments:
    precision = (Precision.named(run.precision) if run.precision is not None
                 else precision_for(device, run.spec.precision))
    # transformers v5: a float warmup_steps below 1 is a ratio of the total steps (warmup_ratio is deprecated).
    warmup: float | int = min(hp.warmup_ratio, 0.999999) if hp.warmup_ratio > 0 else 0
    return SentenceTransformerTrainingArguments(
        output_dir=str(run.work_dir / "trainer"),
        learning_rate=hp.learning_rate,
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        num_train_epochs=hp.epochs,
        warmup_steps=warmup,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler_type,
        optim=hp.optim,
        seed=run.train_seed if run.train_seed is not None else run.spec.seed,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=device == "cpu",
        batch_sampler=(BatchSamplers.NO_DUPLICATES if needs_no_duplicates(run.spec, run.params)
                       else BatchSamplers.BATCH_SAMPLER),
        eval_strategy="no",
        save_strategy="no",  # we set control.should_save ourselves
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=device.startswith("cuda"),
        save_only_model=False,
        restore_callback_states_from_checkpoint=False,
    )


@dataclass
class TrialSetup:
    trainer: SentenceTransformerTrainer
    callback: TrialCallback
    model: SentenceTransformer
    hp: Hyperparameters


def set_up_trial(run: TrialRun, prepared: PreparedStudy, hooks: TrialHooks, device: str) -> TrialSetup:
    """Fresh model, loss, arguments, callback and trainer (and the saved progress when resuming)."""
    if device.startswith("cuda:") and torch.cuda.is_available():
        torch.cuda.set_device(torch.device(device))
    hf_logging.disable_progress_bar()  # "Writing model shards" bars on every checkpoint
    hp = hyperparameters(run.spec, run.params)
    model = prepared.fresh_model(device)
    if hp.max_seq_length is not None:
        model.max_seq_length = hp.max_seq_length
    progress = TrialProgress.load(run.resume_from) if run.resume_from is not None else TrialProgress()
    progress.reported |= set(run.reported_points)
    callback = TrialCallback(prepared, hooks, progress, eval_every=run.spec.eval_every_examples(),
                             examples_per_step=hp.examples_per_step,
                             patience=run.spec.evaluation.early_stopping_patience,
                             threshold=run.spec.evaluation.early_stopping_threshold,
                             checkpoints=CheckpointPolicy(hooks.checkpoint_interval()))
    trainer = _Trainer(model=model, args=training_arguments(run, hp, device), train_dataset=prepared.train_dataset,
                       loss=build_loss(run.spec, run.params, model), callbacks=[callback],
                       token_cache=prepared.token_cache, checkpoint_sink=callback.take_checkpoint)
    trainer.remove_callback(PrinterCallback)  # prints the final train metrics to stdout
    return TrialSetup(trainer=trainer, callback=callback, model=model, hp=hp)


def train_trial(run: TrialRun, prepared: PreparedStudy, hooks: TrialHooks, device: str) -> TrialOutcome:
    """Train one trial to completion, pruning, early stop or interruption. OOM errors propagate unchanged."""
    run.work_dir.mkdir(parents=True, exist_ok=True)
    setup: TrialSetup | None = None
    try:
        setup = set_up_trial(run, prepared, hooks, device)
        resume = str(run.resume_from) if run.resume_from is not None else None
        setup.trainer.train(resume_from_checkpoint=resume)
        setup.callback.abandon_checkpoint()  # one in flight stops at its next stage, unless a resume needs it
        outcome = _finish(run, prepared, setup)  # the final evaluation overlaps the checkpoint job in flight
        setup.callback.finish_checkpoints()  # completed and recorded, or abandoned: none left running
        return outcome
    finally:
        if setup is not None:
            setup.callback.release()
        setup = None
        if device.startswith("cuda"):
            free_memory()


def _finish(run: TrialRun, prepared: PreparedStudy, setup: TrialSetup) -> TrialOutcome:
    cb, progress, model = setup.callback, setup.callback.progress, setup.model
    examples = cb.examples_seen
    if progress.status == "pruned":
        return TrialOutcome(status="pruned", examples_seen=examples, value=progress.last_value,
                            subset_value=progress.best_value)
    if progress.status == "interrupted":
        return TrialOutcome(status="interrupted", examples_seen=examples, subset_value=progress.best_value)
    if progress.last_eval_examples < examples or progress.best_value is None:
        # The end of training falls between evaluation points: judge the final state too (not reported).
        end_value, end_metrics = cb.evaluate(model)
        cb.consider(model, end_value, examples, end_metrics)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    if prepared.subset_is_full and progress.best_value is not None and progress.best_metrics is not None:
        # The eval subset is the whole eval split: the best state was scored on it already.
        value, metrics = progress.best_value, dict(progress.best_metrics)
    else:
        value, metrics = prepared.evaluate_full(model)
    final_dir = run.work_dir / "final"
    model.save_pretrained(str(final_dir), create_model_card=False)
    if not math.isfinite(value):
        log.warning("trial %s: full evaluation gave %s", run.trial_number, value)
    return TrialOutcome(status="complete", examples_seen=examples, value=value, metrics=metrics,
                        best_model_dir=final_dir, subset_value=progress.best_value)


__all__ = ["Hyperparameters", "TrialSetup", "hyperparameters", "set_up_trial", "train_trial",
           "training_arguments"]
