"""A study's `precision` (auto / fp32 / bf16): the worker's bf16 detection, what each mode runs on each kind of
device, and evaluation in float32 whatever a trial trains in. No database, no training (the real bf16 runs are
in tests/test_training.py and tests/test_checkpoint_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.core.spec import StudySpec
from tests.studyspecs import contract_study
from workers import devices
from workers.devices import (AMX, AVX512_BF16, CUDA_BF16, NO_BF16, Capability, Precision, PrecisionUnavailable,
                             bf16_unit_from_cpuinfo, cpu_bf16_unit, full_precision, precision_for)

# /proc/cpuinfo as three kinds of x86 servers write it (flags shortened to what matters plus neighbours).
SAPPHIRE_RAPIDS = "avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx512_vnni"
ZEN4 = "avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni"
ICE_LAKE = "avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2"


def cpuinfo(*flag_lines: str) -> str:
    return "\n".join(f"processor\t: {i}\nvendor_id\t: X\nmodel name\t: Y\nflags\t\t: {flags}\n"
                     for i, flags in enumerate(flag_lines))


@pytest.mark.parametrize(("text", "unit"), [
    (cpuinfo(SAPPHIRE_RAPIDS, SAPPHIRE_RAPIDS), AMX),
    (cpuinfo(ZEN4, ZEN4), AVX512_BF16),
    (cpuinfo(ICE_LAKE), NO_BF16),
    (cpuinfo(SAPPHIRE_RAPIDS, ZEN4), AVX512_BF16),  # judged by its weakest processor
    (cpuinfo(SAPPHIRE_RAPIDS, ICE_LAKE), NO_BF16),
    (cpuinfo("amx_bf16 avx2"), NO_BF16),  # amx_bf16 without the tile unit the kernels use
    ("processor\t: 0\nFeatures\t: fp asimd bf16 sve\n", NO_BF16),  # an Arm CPU: no AMX / AVX512-BF16
    ("", NO_BF16),
    ("flags: avx512_bf16_not_really", NO_BF16),  # whole flags only
], ids=["sapphire-rapids", "zen4", "ice-lake", "mixed-amx-zen4", "mixed-amx-none", "amx-no-tile", "arm", "empty",
        "substring"])
def test_bf16_unit_from_cpuinfo(text: str, unit: str) -> None:
    assert bf16_unit_from_cpuinfo(text) == unit


def test_torch_probe_first_cpuinfo_without_one(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(cpuinfo(SAPPHIRE_RAPIDS))
    assert cpu_bf16_unit(probe=lambda: AVX512_BF16, cpuinfo=info) == AVX512_BF16  # torch's word wins
    assert cpu_bf16_unit(probe=lambda: NO_BF16, cpuinfo=info) == NO_BF16  # e.g. the OS refused AMX tiles
    assert cpu_bf16_unit(probe=lambda: None, cpuinfo=info) == AMX  # a torch without the probe: the flags
    assert cpu_bf16_unit(probe=lambda: None, cpuinfo=tmp_path / "missing") == NO_BF16


def test_this_machine_agrees_with_its_cpuinfo() -> None:
    """torch's probe never claims more than /proc/cpuinfo's flags (it may claim less: AMX tiles the OS does not
    grant), and the capability found at start-up is torch's answer."""
    info = Path("/proc/cpuinfo")
    from_torch = devices.bf16_unit_from_torch()
    if not info.is_file() or from_torch is None:
        pytest.skip("no /proc/cpuinfo, or a torch without the CPU probe")
    rank = [NO_BF16, AVX512_BF16, AMX]
    assert rank.index(from_torch) <= rank.index(bf16_unit_from_cpuinfo(info.read_text()))
    assert devices.capability("cpu") == Capability("cpu", from_torch)


CPU_AMX, CPU_AVX, CPU_NONE = Capability("cpu", AMX), Capability("cpu", AVX512_BF16), Capability("cpu", NO_BF16)
H100, V100 = Capability("cuda:0", CUDA_BF16), Capability("cuda:0", NO_BF16)


@pytest.mark.parametrize(("cap", "mode", "expected"), [
    (CPU_AMX, "fp32", "fp32"), (CPU_AVX, "fp32", "fp32"), (CPU_NONE, "fp32", "fp32"),
    (CPU_AMX, "bf16", "bf16"), (CPU_AVX, "bf16", "bf16"),
    (CPU_NONE, "bf16", "bf16"),  # asked for: emulated (slow), still bf16
    (CPU_NONE, "auto", "fp32"),
    (H100, "auto", "bf16"), (V100, "auto", "fp16"), (H100, "bf16", "bf16"), (H100, "fp32", "fp32"),
    (V100, "fp32", "fp32"),
])
def test_precision_for_each_mode(cap: Capability, mode: str, expected: str) -> None:
    assert precision_for(cap, mode).name == expected


@pytest.mark.parametrize("on", [False, True])
def test_auto_on_a_cpu_with_bf16_units_follows_the_constant(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    monkeypatch.setattr(devices, "CPU_AUTO_BF16", on)
    for cap in (CPU_AMX, CPU_AVX):
        assert precision_for(cap, "auto").name == ("bf16" if on else "fp32")
    assert precision_for(CPU_NONE, "auto").name == "fp32"  # never emulated under auto


def test_auto_stays_fp32_on_cpu_until_measured() -> None:
    """The shipped default (README, "precision"): issue 22's quality measurement has not switched it on yet."""
    assert devices.CPU_AUTO_BF16 is False
    assert precision_for(CPU_AMX).name == "fp32"


def test_bf16_on_a_gpu_without_it_fails_with_a_reason() -> None:
    with pytest.raises(PrecisionUnavailable) as err:
        precision_for(V100, "bf16")
    assert err.value.field == "precision"
    assert "no bfloat16 support" in err.value.message and "auto" in err.value.message


def test_precision_names_round_trip() -> None:
    for name in ("fp32", "bf16", "fp16"):
        assert Precision.named(name).name == name
    with pytest.raises(ValueError):
        Precision.named("int8")


def test_the_study_field_defaults_to_auto() -> None:
    assert StudySpec.model_validate(contract_study()).precision == "auto"
    for mode in ("auto", "fp32", "bf16"):
        assert StudySpec.model_validate(contract_study(precision=mode)).precision == mode


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_full_precision_lifts_the_trainers_autocast_for_evaluation() -> None:
    """As the trainer's accelerator leaves a bf16 trial's model: `forward` wrapped in autocast for good, the plain
    one kept as `_original_forward`. Inside full_precision the model runs in float32; after it, autocast again."""
    from accelerate.utils import convert_outputs_to_fp32

    model = Tiny()
    x = torch.randn(4, 8)
    dtypes: list[torch.dtype] = []
    model.linear.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    model._original_forward = model.forward  # type: ignore[assignment]
    wrapped = convert_outputs_to_fp32(torch.autocast("cpu", dtype=torch.bfloat16)(model.forward))
    model.forward = wrapped  # type: ignore[method-assign]
    model(x)
    with full_precision(model):
        model(x)
    model(x)
    assert dtypes == [torch.bfloat16, torch.float32, torch.bfloat16]
    assert model.forward is wrapped
    with full_precision(Tiny()):  # a model nobody wrapped: nothing to do
        pass
