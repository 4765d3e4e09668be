"""The training thread's share of a resumable checkpoint (workers/checkpoint_snapshot.py): every tensor copied
into CPU memory, so training may change the originals at once; from a GPU into pinned host memory, waited for
once. (The whole snapshot, written by the writer thread and resumed by the trainer, is exercised with the real
model in tests/test_training.py and tests/test_trial_costs.py.)"""

from __future__ import annotations

import pytest
import torch

from workers.checkpoint_snapshot import _HostCopier, _tensor_bytes


def optimizer_like(device: str) -> dict:
    w = torch.arange(12, dtype=torch.float32, device=device).reshape(3, 4)
    return {"state": {0: {"step": torch.tensor(7.0), "exp_avg": w * 2, "exp_avg_sq": w * w}},
            "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999), "params": [0]}], "weights": w}


def test_copies_are_independent_of_the_training_state() -> None:
    live = optimizer_like("cpu")
    copier = _HostCopier()
    copy = copier.tree(live)
    copier.finish()
    before = {k: v.clone() for k, v in copy["state"][0].items()}
    live["state"][0]["exp_avg"].add_(1.0)  # what the next optimizer step does, in place
    live["state"][0]["step"] += 1
    live["param_groups"][0]["lr"] = 1.0
    assert all(torch.equal(copy["state"][0][k], before[k]) for k in before)
    assert copy["param_groups"][0]["lr"] == 2e-5 and copy["param_groups"][0]["betas"] == (0.9, 0.999)
    assert copy["weights"].data_ptr() != live["weights"].data_ptr()
    assert _tensor_bytes(copy) == 4 * (1 + 12 * 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_every_dtype_and_shape_comes_back_the_same(dtype: torch.dtype) -> None:
    copier = _HostCopier()
    for live in (torch.arange(24).reshape(2, 3, 4).to(dtype), torch.tensor(5).to(dtype),
                 torch.arange(24).reshape(4, 6).t().to(dtype), torch.empty(0, 3, dtype=dtype)):
        copy = copier.tensor(live)
        assert copy.dtype == live.dtype and copy.shape == live.shape and torch.equal(copy, live)
        assert copy.is_contiguous() and (live.numel() == 0 or copy.data_ptr() != live.data_ptr())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU (needs CUDA)")
def test_from_a_gpu_into_pinned_host_memory() -> None:
    live = optimizer_like("cuda")
    copier = _HostCopier()
    copy = copier.tree(live)
    copier.finish()  # one wait for every non-blocking copy
    live["weights"].mul_(0)
    assert copy["weights"].device.type == "cpu" and copy["weights"].is_pinned()
    assert torch.equal(copy["weights"], torch.arange(12, dtype=torch.float32).reshape(3, 4))
    assert torch.equal(copy["state"][0]["exp_avg_sq"], copy["weights"] * copy["weights"])
