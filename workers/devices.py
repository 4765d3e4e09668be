"""Where a trial runs and with which precision; how to recognise running out of memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    bf16: bool = False
    fp16: bool = False


def precision_for(device: str) -> Precision:
    """bf16 where the GPU supports it, fp16 on other GPUs, full precision on CPU."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return Precision()
    if torch.cuda.is_bf16_supported():
        return Precision(bf16=True)
    return Precision(fp16=True)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError that says "out of memory" (CUDA, cuDNN, cuBLAS, MPS)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Return cached GPU memory to the driver (no-op on CPU)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
