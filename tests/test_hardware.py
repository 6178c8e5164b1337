"""qkv.hardware: capability detection, the QKV_CPU_ISA cap, and precision resolution."""

import dataclasses
import warnings

import pytest
import torch

from qkv import hardware


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())


def test_capabilities_describe_this_cpu():
    caps = hardware.capabilities("cpu")
    assert caps.device == "cpu"
    assert caps.isa in hardware.ISA_CLASSES
    assert caps.threads == torch.get_num_threads() and caps.cores >= 1
    assert caps.isa in str(caps)
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.isa = "amx"  # type: ignore[misc]


def test_native_bf16_agrees_with_torch_cpuid(monkeypatch):
    monkeypatch.delenv("QKV_CPU_ISA", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert hardware.capabilities("cpu").native_bf16 == native
    assert hardware.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("cap", ["avx2", "avx512", "other"])
def test_cap_to_a_class_without_native_bf16_resolves_auto_to_fp32(monkeypatch, cap):
    monkeypatch.setenv("QKV_CPU_ISA", cap)
    caps = hardware.capabilities("cpu")
    assert not caps.native_bf16
    assert caps.isa_cap == cap and caps.isa in (cap, "neon")  # a cap from another family leaves ARM as it is
    assert hardware.resolve_precision("auto", "cpu") == "fp32"


def test_cap_never_raises_the_class(monkeypatch):
    monkeypatch.setenv("QKV_CPU_ISA", "avx2")
    low = hardware.cpu_isa()
    monkeypatch.setenv("QKV_CPU_ISA", "amx")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("QKV_CPU_ISA")
    real = hardware.cpu_isa()
    monkeypatch.setenv("QKV_CPU_ISA", "amx")
    assert hardware.cpu_isa() == real  # amx is above (or equal to) any detected class: no effect
    assert low in ("avx2", "other", "neon")


def test_onednn_limit_below_bf16_is_not_native(monkeypatch):
    monkeypatch.delenv("QKV_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not hardware.capabilities("cpu").native_bf16
    assert hardware.resolve_precision("auto", "cpu") == "fp32"


def test_unknown_isa_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("QKV_CPU_ISA", "avx9000")
    with pytest.raises(ValueError, match=r"QKV_CPU_ISA='avx9000'.*avx2"):
        hardware.capabilities("cpu")


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match=r"precision 'bf32' is not one of auto, fp32, bf16, fp16"):
        hardware.resolve_precision("bf32", "cpu")


def test_fp16_needs_cuda():
    with pytest.raises(ValueError, match="fp16"):
        hardware.resolve_precision("fp16", "cpu")


def test_explicit_bf16_without_native_runs_after_one_warning(monkeypatch, fresh_warnings):
    monkeypatch.setenv("QKV_CPU_ISA", "avx2")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
    msgs = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "slower than fp32" in msgs[0] and "precision auto" in msgs[0]


def test_explicit_precisions_pass_through(monkeypatch):
    monkeypatch.delenv("QKV_CPU_ISA", raising=False)
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"


def test_devices():
    assert hardware.resolve_device("cpu").type == "cpu"
    assert hardware.resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="tpu"):
        hardware.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            hardware.resolve_device("cuda")

