"""``qkv doctor``: the machine report, its matmul probe, and its errors; ``qkv demo --precision`` errors."""

from __future__ import annotations

import os
import subprocess
import sys

from qkv import hardware
from qkv.cli import main
from qkv.cli.doctor import kernel_lines, matmul_probe

AVX2 = {"QKV_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _qkv(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qkv", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_doctor_reports_versions_class_precision_and_kernels(capsys, monkeypatch):
    monkeypatch.delenv("QKV_CPU_ISA", raising=False)
    assert main(["doctor", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    caps = hardware.capabilities("cpu")
    assert out.startswith("qkv ") and "torch " in out
    assert f"instruction-set class {caps.isa}" in out
    assert f"precision auto -> {hardware.resolve_precision('auto', 'cpu')}" in out
    assert f"torch uses {caps.threads} intra-op thread" in out
    assert "kernels:" in out and all(line in out for line in kernel_lines())


def test_doctor_on_an_avx2_cpu_says_fp32():
    proc = _qkv("doctor", "--device", "cpu", **AVX2)
    assert proc.returncode == 0, proc.stderr
    assert "precision auto -> fp32" in proc.stdout
    assert "capped by QKV_CPU_ISA=avx2" in proc.stdout and "bf16 matmuls on cpu: not native" in proc.stdout


def test_bad_cpu_isa_and_bad_precision_are_one_line_and_exit_2():
    proc = _qkv("doctor", QKV_CPU_ISA="avx3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "qkv doctor: error: QKV_CPU_ISA='avx3' is not a CPU class qkv knows; use one of "
        + ", ".join(hardware.ISA_CLASSES)]
    proc = _qkv("demo", "--precision", "fp8")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["qkv demo: error: --precision 'fp8' is not one of auto, fp32, bf16"]


def test_matmul_probe_times_both_dtypes():
    r = matmul_probe(seconds=0.2, n=64)
    assert r["fp32"] > 0 and r["bf16"] > 0
    assert r["bf16_over_fp32"] == r["bf16"] / r["fp32"]


def test_doctor_bench_prints_the_probe(capsys, monkeypatch):
    import qkv.cli.doctor as doctor

    monkeypatch.setattr(doctor, "matmul_probe", lambda **kw: {"fp32": 100.0, "bf16": 25.0, "bf16_over_fp32": 0.25})
    assert main(["doctor", "--bench", "--device", "cpu"]) == 0
    assert "fp32 100.0 GFLOP/s, bf16 25.0 GFLOP/s, bf16/fp32 0.25x" in capsys.readouterr().out
