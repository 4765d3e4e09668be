"""Time-to-quality bench: the in-process ways to train, each run inside one method's own process.

- `train_plain`: one configuration with a plain `SentenceTransformerTrainer` (a fresh model from disk), the dev
  evaluator every `every` examples, its whole learning curve recorded (examples seen, dev score, this process's
  CPU seconds since the configuration started). Used by the replay grid and by method (a).
- `run_random`: method (a), random search without pruning (Optuna's RandomSampler, ask/tell in memory).
- `run_hpsearch`: method (b), `SentenceTransformerTrainer.hyperparameter_search(backend="optuna")` with its
  defaults (TPE, MedianPruner on `global_step`), `model_init`, eval_steps fixed in steps.

Every method stops at its CPU budget: the trial running when the process passes it is cut short and does not
count. The value of a trial is the dev score of its model at the end of training (the plain trainer keeps the
last state); its winner's weights are kept in memory (the copy's CPU is not charged) and scored on test after
the budget.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.ttq_data import (
    BATCH_SIZES,
    EPOCHS,
    LOSSES,
    LR_RANGE,
    MAX_SEQ_LENGTH,
    TRAIN_SEED,
    WARMUP_RANGE,
    WEIGHT_DECAY_RANGE,
    BenchData,
    columns,
    cpu_seconds,
    evaluator,
    model_path,
    value_of,
)


@dataclass
class TrialRecord:
    """One trial of a method (or one grid configuration): its curve and how it ended."""

    number: int
    params: dict[str, Any]
    planned_examples: int = 0
    examples: list[int] = field(default_factory=list)  # examples seen at each evaluation
    values: list[float] = field(default_factory=list)  # dev score there
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds since the trial started, there
    cpu_start: float = 0.0  # the process's CPU (since the method started) when the trial started
    cpu_end: float = 0.0  # ... when its value was known (or it stopped)
    state: str = "running"  # complete | pruned | over_budget
    value: float | None = None
    examples_seen: int = 0
    test: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_since(t0: float) -> float:
    return cpu_seconds() - t0


def _loss(name: str, model: Any) -> Any:
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, CosineSimilarityLoss

    return {"CosineSimilarityLoss": CosineSimilarityLoss, "CoSENTLoss": CoSENTLoss}[name](model)


def training_args(out: Path, params: dict[str, Any], eval_steps: int) -> Any:
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    warmup = float(params["warmup_ratio"])
    return SentenceTransformerTrainingArguments(
        output_dir=str(out), learning_rate=float(params["learning_rate"]),
        per_device_train_batch_size=int(params["per_device_train_batch_size"]),
        num_train_epochs=float(params["num_train_epochs"]),
        warmup_steps=min(warmup, 0.999999) if warmup > 0 else 0.0,  # v5: a float < 1 is a ratio
        weight_decay=float(params["weight_decay"]), max_grad_norm=1.0, lr_scheduler_type="linear",
        optim="adamw_torch", seed=TRAIN_SEED, use_cpu=True, batch_sampler=BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)


def trainer_class() -> type:
    from sentence_transformers.sentence_transformer import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):  # type: ignore[misc]
        """No model card (as the worker's trainer)."""

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            return None

    return Trainer


def curve_callback(budget: float | None, method_t0: float) -> Any:
    """Records every evaluation of the current trial; stops training once the process passed `budget`."""
    from transformers import TrainerCallback

    class Curve(TrainerCallback):  # type: ignore[misc]
        record: TrialRecord | None = None
        trial_t0: float = 0.0
        over_budget = False

        def start(self, record: TrialRecord) -> None:
            self.record, self.trial_t0 = record, cpu_seconds()
            record.cpu_start = self.trial_t0 - method_t0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            assert self.record is not None
            self.record.planned_examples = state.max_steps * args.per_device_train_batch_size

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            assert self.record is not None
            self.record.examples_seen = state.global_step * args.per_device_train_batch_size
            if budget is not None and cpu_seconds() - method_t0 >= budget:
                self.over_budget = True
                control.should_training_stop = True
                control.should_evaluate = False

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
            r = self.record
            assert r is not None
            examples = state.global_step * args.per_device_train_batch_size
            if r.examples and r.examples[-1] == examples:
                return
            r.examples.append(examples)
            r.values.append(value_of(metrics or {}))
            r.cpu.append(_cpu_since(self.trial_t0))

    return Curve()


def snapshot(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_plain(data: BenchData, params: dict[str, Any], number: int, *, dev_eval: Any, work: Path,
                curve: Any, test_eval: Any | None = None) -> tuple[TrialRecord, Any]:
    """One configuration, plain trainer; returns (record, the trained model)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from transformers import PrinterCallback

    record = TrialRecord(number=number, params=dict(params))
    curve.start(record)
    model = SentenceTransformer(model_path(), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    bs = int(params["per_device_train_batch_size"])
    trainer = trainer_class()(
        model=model, args=training_args(work / f"trial-{number}", params, max(1, data.sizes.every // bs)),
        train_dataset=Dataset.from_dict(columns(data.train)), loss=_loss(str(params["loss"]), model),
        evaluator=dev_eval, callbacks=[curve])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    if curve.over_budget:
        record.state = "over_budget"
    else:
        if not record.examples or record.examples[-1] != record.examples_seen:  # no evaluation at the end
            record.examples.append(record.examples_seen)
            record.values.append(value_of(dev_eval(model)))
            record.cpu.append(_cpu_since(curve.trial_t0))
        record.state, record.value = "complete", record.values[-1]
        if test_eval is not None:
            record.test = value_of(test_eval(model))
    record.cpu_end = record.cpu_start + _cpu_since(curve.trial_t0)
    del trainer
    return record, model


# ------------------------------------------------------------------ the grid (replay data)


def grid_configs() -> list[dict[str, Any]]:
    from bench.ttq_data import GRID_LRS, GRID_WARMUP, GRID_WEIGHT_DECAY

    # In an order where every prefix of blocks is a complete sub-grid the replay can use on its own (on the
    # shared 2-core machine the whole grid may not fit in one session; --grid resumes): loss outermost, then
    # batch sizes 16 and 32, then 64.
    blocks = [(loss, sizes) for loss in LOSSES for sizes in (BATCH_SIZES[:2], BATCH_SIZES[2:])]
    return [{"learning_rate": lr, "per_device_train_batch_size": bs, "num_train_epochs": ep,
             "warmup_ratio": GRID_WARMUP, "weight_decay": GRID_WEIGHT_DECAY, "loss": loss}
            for loss, sizes in blocks for bs in sizes for lr in GRID_LRS for ep in EPOCHS]


def config_key(params: dict[str, Any]) -> str:
    return (f"lr={float(params['learning_rate']):g} bs={int(params['per_device_train_batch_size'])} "
            f"ep={int(params['num_train_epochs'])} loss={params['loss']}")


# ------------------------------------------------------------------ (a) random search


def space_params(trial: Any) -> dict[str, Any]:
    return {"learning_rate": trial.suggest_float("learning_rate", *LR_RANGE, log=True),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", list(BATCH_SIZES)),
            "num_train_epochs": trial.suggest_categorical("num_train_epochs", list(EPOCHS)),
            "warmup_ratio": trial.suggest_float("warmup_ratio", *WARMUP_RANGE),
            "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE),
            "loss": trial.suggest_categorical("loss", list(LOSSES))}


def run_random(data: BenchData, budget: float, seed: int, work: Path, log: Any) -> list[TrialRecord]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = 0.0  # the budget counts the whole process: start-up, imports and data too (as the worker's)
    dev_eval = evaluator(data.dev, "dev")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    curve = curve_callback(budget, t0)
    records: list[TrialRecord] = []
    best: tuple[float, dict[str, Any]] | None = None
    excluded = 0.0  # CPU of the winner's weight copies: bookkeeping of the bench, not of the method
    while cpu_seconds() - t0 - excluded < budget:
        trial = study.ask()
        params = space_params(trial)
        rec, model = train_plain(data, params, trial.number, dev_eval=dev_eval, work=work, curve=curve)
        records.append(rec)
        if rec.state == "complete" and rec.value is not None:
            study.tell(trial, rec.value)
            if best is None or rec.value > best[0]:
                c = cpu_seconds()
                best = (rec.value, snapshot(model))
                excluded += cpu_seconds() - c
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log(f"(a) #{rec.number} {rec.state} value={rec.value} cpu={rec.cpu_end:.0f} {config_key(params)}")
        del model
        gc.collect()
    _score_winner(records, best, data)
    return records


def _score_winner(records: list[TrialRecord], best: tuple[float, dict[str, Any]] | None, data: BenchData) -> None:
    """After the budget: the winner's kept weights on the test subset."""
    if best is None:
        return
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    model.load_state_dict(best[1])
    winner = max((r for r in records if r.state == "complete"), key=lambda r: r.value or -math.inf)
    winner.test = value_of(evaluator(data.test, "test")(model))


# ------------------------------------------------------------------ (b) hyperparameter_search


def run_hpsearch(data: BenchData, budget: float, seed: int, work: Path, log: Any) -> list[TrialRecord]:
    import optuna
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from transformers import PrinterCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = 0.0  # the budget counts the whole process: start-up, imports and data too (as the worker's)
    dev_eval = evaluator(data.dev, "dev")
    curve = curve_callback(budget, t0)
    records: list[TrialRecord] = []
    chosen = {"loss": LOSSES[0]}
    best: list[Any] = [None]
    excluded = [0.0]

    class SwitchLoss(torch.nn.Module):
        """The searched loss: hp_space can only set TrainingArguments, so the loss reads the trial's choice."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model
            self.by_name = torch.nn.ModuleDict({n: _loss(n, model) for n in LOSSES})

        def forward(self, sentence_features: Any, labels: Any) -> Any:
            return self.by_name[chosen["loss"]](sentence_features, labels)

    def model_init(trial: Any = None) -> Any:
        # The trainer calls model_init(trial) before hp_space(trial): a trial's compute starts here.
        if trial is not None:
            _finish_last()
            if cpu_seconds() - t0 - excluded[0] >= budget:
                trial.study.stop()
            rec = TrialRecord(number=trial.number, params={})
            records.append(rec)
            curve.start(rec)
            curve.study = trial.study
        model = SentenceTransformer(model_path(), device="cpu")
        model.max_seq_length = MAX_SEQ_LENGTH
        return model

    def hp_space(trial: optuna.Trial) -> dict[str, Any]:
        params = space_params(trial)
        chosen["loss"] = str(params["loss"])
        records[-1].params = params
        return {"learning_rate": params["learning_rate"],
                "per_device_train_batch_size": params["per_device_train_batch_size"],
                "num_train_epochs": float(params["num_train_epochs"]), "warmup_steps": float(params["warmup_ratio"]),
                "weight_decay": params["weight_decay"]}

    def _finish_last() -> None:
        if not records or records[-1].state != "running":
            return
        rec = records[-1]
        rec.cpu_end = rec.cpu_start + _cpu_since(curve.trial_t0)
        if curve.over_budget:
            rec.state = "over_budget"
        elif rec.examples and rec.examples[-1] >= rec.planned_examples:
            rec.state, rec.value = "complete", rec.values[-1]
        else:
            rec.state = "pruned"
        log(f"(b) #{rec.number} {rec.state} value={rec.value} cpu={rec.cpu_end:.0f} {config_key(rec.params)}")

    from transformers import TrainerCallback

    class Bookkeeping(TrainerCallback):  # type: ignore[misc]
        """After each trial: keep the winner's weights; stop the study once the budget is spent."""

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            rec = records[-1]
            done = rec.examples and rec.examples[-1] >= rec.planned_examples and not curve.over_budget
            if done and model is not None and (best[0] is None or rec.values[-1] > best[0][0]):
                c = cpu_seconds()
                best[0] = (rec.values[-1], snapshot(model))
                excluded[0] += cpu_seconds() - c
            if curve.over_budget or cpu_seconds() - t0 - excluded[0] >= budget:
                curve.study.stop()

    base = {"learning_rate": 5e-5, "per_device_train_batch_size": 16, "num_train_epochs": 1.0,
            "warmup_ratio": 0.1, "weight_decay": 0.0, "loss": LOSSES[0]}
    # eval_steps in steps, the same for every batch size (128 // 16: what a user of the trainer would set)
    args = training_args(work / "hpsearch", base, max(1, data.sizes.every // min(BATCH_SIZES)))
    trainer = trainer_class()(model_init=model_init, args=args, train_dataset=Dataset.from_dict(columns(data.train)),
                              loss=SwitchLoss, evaluator=dev_eval, callbacks=[curve, Bookkeeping()])
    trainer.remove_callback(PrinterCallback)
    try:
        trainer.hyperparameter_search(hp_space=hp_space, compute_objective=value_of, n_trials=200,
                                      direction="maximize", backend="optuna",
                                      sampler=optuna.samplers.TPESampler(seed=seed))
    except ValueError as exc:  # study.best_trial when no trial completed: the records say what happened
        log(f"(b) hyperparameter_search: {exc}")
    _finish_last()
    del trainer
    gc.collect()
    _score_winner(records, best[0], data)
    return records


def run_grid(data: BenchData, done: set[str], work: Path, emit: Any, log: Any) -> None:
    """Every grid configuration not in `done`, one after another; `emit(record)` after each."""
    dev_eval = evaluator(data.dev, "dev")
    test_eval = evaluator(data.test, "test")
    for params in grid_configs():
        key = config_key(params)
        if key in done:
            continue
        t = time.time()
        curve = curve_callback(None, cpu_seconds())
        rec, model = train_plain(data, params, 0, dev_eval=dev_eval, work=work, curve=curve, test_eval=test_eval)
        emit(key, rec)
        log(f"grid {key}: dev {rec.value:.4f} test {rec.test:.4f}, {len(rec.values)} points, "
            f"{rec.cpu_end:.0f} CPU-s, {time.time() - t:.0f} s")
        del model
        gc.collect()
