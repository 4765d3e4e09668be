"""Where a trial runs and with which precision; how to recognise running out of memory.

A study's `precision` (service/core/spec.py) is `auto`, `fp32` or `bf16`; what a trial runs with is one of
`fp32`, `bf16` (autocast, float32 weights) or `fp16` (autocast with a grad scaler, older GPUs under `auto`).
Whether a device multiplies bfloat16 matrices natively is found once, when the worker starts (`capability`):
on a GPU torch's `is_bf16_supported()`; on the CPU torch's own probe of the instructions its kernels use (AMX
tiles, AVX512-BF16), else the flags in /proc/cpuinfo (`amx_bf16`, `avx512_bf16`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from service.core.errors import StsweepError

# `auto` on a CPU with native bf16 matrix units: bf16 autocast when True, float32 when False. False until the
# quality measurement of issue 22 (bf16 against fp32 on full STS-b, several seeds) says bf16 costs nothing.
CPU_AUTO_BF16 = False

CPUINFO = Path("/proc/cpuinfo")
# What a worker records as its bf16 unit: the CPU's matrix units, "cuda" for a GPU with bf16, or "none".
AMX, AVX512_BF16, CUDA_BF16, NO_BF16 = "amx", "avx512_bf16", "cuda", "none"


class PrecisionUnavailable(StsweepError):
    """The study asks for a precision this worker's device cannot train in: the trial fails with this reason."""


@dataclass(frozen=True)
class Precision:
    bf16: bool = False
    fp16: bool = False

    @property
    def name(self) -> str:
        """What the trial is recorded as running with: `bf16`, `fp16` or `fp32`."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    @classmethod
    def named(cls, name: str) -> Precision:
        if name not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {name!r}")
        return cls(bf16=name == "bf16", fp16=name == "fp16")


@dataclass(frozen=True)
class Capability:
    """A worker's device and its native bf16 unit (AMX, AVX512_BF16, CUDA_BF16 or NO_BF16)."""

    device: str
    bf16_unit: str

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> str:
        """For logs: `bf16: amx`, `bf16: cuda`, `no native bf16`."""
        return f"bf16: {self.bf16_unit}" if self.bf16_unit != NO_BF16 else "no native bf16"


def bf16_unit_from_cpuinfo(text: str) -> str:
    """The CPU's native bf16 matrix unit named by /proc/cpuinfo's `flags` lines: AMX (`amx_bf16`, Intel Sapphire
    Rapids and later), AVX512_BF16 (`avx512_bf16`: Cooper Lake, AMD Zen 4 and later), or NO_BF16. Every
    processor listed must have it (a mixed machine is judged by its weakest core)."""
    flag_sets = [set(line.partition(":")[2].split()) for line in text.splitlines()
                 if line.split(":", 1)[0].strip() in ("flags", "Features")]
    if not flag_sets:
        return NO_BF16
    if all("amx_bf16" in flags and "amx_tile" in flags for flags in flag_sets):
        return AMX
    if all("avx512_bf16" in flags for flags in flag_sets):
        return AVX512_BF16
    return NO_BF16


def bf16_unit_from_torch() -> str | None:
    """What torch's own CPU probe finds (the instructions oneDNN's bf16 kernels use; AMX only once the OS let
    this process use its tiles, which `_init_amx` asks for), or None when this torch has no such probe."""
    cpu = getattr(torch, "cpu", None)
    amx = getattr(cpu, "_is_amx_tile_supported", None)
    avx = getattr(cpu, "_is_avx512_bf16_supported", None)
    if amx is None or avx is None or not torch.backends.mkldnn.is_available():
        return None
    init_amx = getattr(cpu, "_init_amx", None)
    if init_amx is not None:
        init_amx()
    if amx():
        return AMX
    return AVX512_BF16 if avx() else NO_BF16


def cpu_bf16_unit(probe: Callable[[], str | None] = bf16_unit_from_torch, cpuinfo: Path = CPUINFO) -> str:
    """The CPU's native bf16 unit: torch's probe when it has one, else /proc/cpuinfo (NO_BF16 without either)."""
    found = probe()
    if found is not None:
        return found
    try:
        return bf16_unit_from_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return NO_BF16


def capability(device: str) -> Capability:
    """Found once, at worker start-up."""
    if device.startswith("cuda"):
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return Capability(device, CUDA_BF16 if gpu_bf16 else NO_BF16)
    return Capability(device, cpu_bf16_unit())


def precision_for(cap: Capability | str, mode: str = "auto") -> Precision:
    """What a trial of a study with `precision: mode` runs with on `cap`'s device.

    `auto`: bf16 on GPUs that support it, fp16 on other GPUs; on the CPU bf16 autocast where it has native bf16
    matrix units and CPU_AUTO_BF16 is on, else fp32. `fp32`: fp32. `bf16`: bf16 on any CPU (without native units
    it is emulated, and slow) and on GPUs that support it; PrecisionUnavailable on a GPU that does not."""
    if isinstance(cap, str):
        cap = capability(cap)
    if mode == "fp32":
        return Precision()
    if mode == "bf16":
        if cap.is_gpu and cap.bf16_unit != CUDA_BF16:
            raise PrecisionUnavailable(f"precision: bf16 was asked for, but this worker's GPU ({cap.device}) has no "
                                       "bfloat16 support (compute capability 8.0 or later): use precision auto "
                                       "(fp16 there) or fp32", field="precision")
        return Precision(bf16=True)
    if mode != "auto":
        raise ValueError(f"unknown precision mode {mode!r}")
    if cap.is_gpu:
        return Precision(bf16=True) if cap.bf16_unit == CUDA_BF16 else Precision(fp16=True)
    if CPU_AUTO_BF16 and cap.bf16_unit in (AMX, AVX512_BF16):
        return Precision(bf16=True)
    return Precision()


@contextmanager
def full_precision(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` without the autocast a bf16 or fp16 trial trains under. The trainer's accelerator wraps the
    model's `forward` in autocast for good (keeping the plain one as `_original_forward`), so without this every
    evaluation of the trial would run in the training precision too; this way a trial's values are float32, like
    the study's baseline, the test split's score and any evaluation of the pulled (float32) model."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


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
