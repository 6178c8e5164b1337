"""Routing: which path computes a call, tested through the public explain() / chunked_route() and the routing
table (QKV_ROUTING, QKV_CPU_ISA), never through private globals; and the dispatcher runs what explain says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import qkv.hardware
import qkv.kernels
from qkv.functional import causal_mask, chunked_route, explain, scaled_dot_product_attention
from qkv.kernels import native, routing, short
from tests.kernels.tables import routing_table, shipped_routing


@pytest.fixture
def shipped(monkeypatch, tmp_path):
    """The shipped measurements (made on an AVX512-BF16 CPU) as this CPU class's, and the C kernels built."""
    if native.kernels() is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    return shipped_routing(monkeypatch, tmp_path)


def qkv_(L, S=None, dtype=torch.float32, B=2, H=4, E=16):
    S = L if S is None else S
    return torch.randn(B, H, L, E, dtype=dtype), torch.randn(B, H, S, E, dtype=dtype), torch.randn(B, H, S, E, dtype=dtype)


def test_short_sequences_route_by_the_measured_minimum(shipped):
    short = shipped["attention"]["short"]["min_len"]
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        n = short[name]
        assert explain(*qkv_(n, dtype=dtype), causal=True).path == "qkv.kernels.short"
        below = explain(*qkv_(n - 1, dtype=dtype))
        assert below.path == "torch sdpa" and f"below {n}, its routing entry's minimum ({name}" in "".join(below.declined)
    q, k, v = qkv_(64)
    assert explain(q[:, :, :1], k, v).path == "torch sdpa"  # one query (a decoding step)
    assert explain(q.double(), k.double(), v.double()).path == "torch sdpa"
    for kw in (dict(mask=torch.ones(64, 64, dtype=torch.bool)), dict(bias=torch.zeros(64, 64)), dict(dropout_p=0.1)):
        route = explain(q, k, v, **kw)
        assert route.path == "torch sdpa" and "no mask, bias or dropout" in "".join(route.declined), kw


def test_the_dispatcher_runs_what_explain_says(shipped):
    """The short kernel returns (B, L, H, E)-ordered memory, torch's kernel (B, H, L, E): the route is visible."""
    q, k, v = qkv_(64)
    out = scaled_dot_product_attention(q, k, v, causal=True)
    assert explain(q, k, v, causal=True).path == "qkv.kernels.short" and out.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=1e-5)
    q16, k16, v16 = (t[:, :, :16] for t in (q, k, v))
    out = scaled_dot_product_attention(q16, k16, v16)
    assert explain(q16, k16, v16).path == "torch sdpa" and out.is_contiguous()


def test_long_bf16_goes_to_the_c_blocks_where_measured(shipped):
    n = shipped["attention"]["blocks"]["min_len"]["bfloat16"]
    q, k, v = qkv_(n, dtype=torch.bfloat16, B=1, H=2)
    mask = torch.rand(1, 1, n, n) > 0.1
    route = explain(q, k, v, mask=mask, causal=True)
    assert route.path == "qkv.kernels.blocks" and f"from min(L, S) = {n}" in route.reason
    out = scaled_dot_product_attention(q, k, v, mask=mask, causal=True)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask & causal_mask(n))
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)
    assert explain(q.float(), k.float(), v.float(), mask=mask).path == "torch sdpa"  # float32: no routing entry
    assert explain(q, k, v, mask=mask, dropout_p=0.1).path == "torch sdpa"
    broadcast = torch.ones(1, 1, n, 1, dtype=torch.bool).expand(1, 1, n, n)  # keys broadcast: not in C
    assert explain(q, k, v, mask=broadcast).path == "torch sdpa"
    assert explain(q[:, :, : n - 1], k, v, mask=mask[:, :, : n - 1]).path == "torch sdpa"


def test_compiled_graphs_keep_torch_ops_for_the_blocks(shipped):
    L = max(shipped["attention"]["blocks"]["min_len"]["bfloat16"], short.MAX_LEN + 1)  # past the short kernel
    q, k, v = qkv_(L, dtype=torch.bfloat16, B=1, H=2)
    assert explain(q, k, v).path == "qkv.kernels.blocks"
    compiled = torch.compile(lambda q, k, v: scaled_dot_product_attention(q, k, v), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=0, rtol=0)


def test_a_cpu_class_without_measurements_routes_nothing(monkeypatch, tmp_path):
    routing_table(monkeypatch, tmp_path, {})
    for dtype in (torch.float32, torch.bfloat16):
        for L in (64, 512):
            route = explain(*qkv_(L, dtype=dtype, B=1, H=2))
            assert route.path == "torch sdpa" and "has no routing entry" in "".join(route.declined)
    assert chunked_route(*qkv_(64)).path == "qkv.functional.chunked"


def test_sdpa_kernel_choice_is_honoured(shipped):
    q, k, v = qkv_(64)
    with sdpa_kernel(SDPBackend.MATH):
        route = explain(q, k, v, causal=True)
        assert route.path == "qkv.functional.attention_math" and "sdpa_kernel" in "".join(route.declined)
        assert explain(q, k, v).path == "torch sdpa"
        assert chunked_route(q, k, v, causal=True).path == "qkv.functional.chunked"
        out = scaled_dot_product_attention(q, k, v)
    assert out.is_contiguous()  # torch's layout, not the short kernel's
    assert explain(q, k, v).path == "qkv.kernels.short"


def test_disable_and_environment_switch(shipped):
    q, k, v = qkv_(64)
    with qkv.kernels.disabled():
        assert not qkv.kernels.enabled() and explain(q, k, v).path == "torch sdpa"
    assert qkv.kernels.enabled() and explain(q, k, v).path == "qkv.kernels.short"
    code = ("import torch, qkv.kernels\nfrom qkv.functional import explain\nq = torch.randn(1, 2, 64, 16)\n"
            "print(qkv.kernels.enabled(), explain(q, q, q).path)")
    env = {**os.environ, "QKV_KERNELS": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "False torch sdpa"
    code = ("import torch\nfrom qkv.functional import accelerators, explain\nbefore = accelerators.registered()\n"
            "q = torch.randn(1, 2, 64, 16)\nexplain(q, q, q)\nprint(before, accelerators.registered())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "() ('qkv.kernels',)"  # registered on the first call, functional imports none


def test_chunked_calls_route_to_padded_and_blocks(monkeypatch, tmp_path):
    if native.kernels() is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    routing_table(monkeypatch, tmp_path, {"chunked": {"padded": {"float32": 1}, "blocks": {"float32": 1}}})
    q, k, v = qkv_(32)
    lengths = torch.tensor([32, 5])
    assert chunked_route(q, k, v, lengths=lengths).path == "qkv.kernels.padded"
    assert chunked_route(q, k, v, lengths=lengths, causal=True).path == "qkv.kernels.blocks"
    bias = torch.zeros(1, 4, 32, 32, requires_grad=True)
    route = chunked_route(q, k, v, bias=bias)
    assert route.path == "qkv.functional.chunked" and "needs a gradient" in "".join(route.declined)
    assert chunked_route(q.double(), k.double(), v.double()).path == "qkv.functional.chunked"
    assert chunked_route(q.bfloat16(), k.bfloat16(), v.bfloat16()).path == "qkv.functional.chunked"  # unmeasured


def test_long_masks_never_go_through_a_dense_float_mask(monkeypatch, tmp_path):
    routing_table(monkeypatch, tmp_path, {})
    q, k, v = qkv_(1024, B=1, H=1)
    mask = torch.rand(1, 1, 1024, 1024) > 0.2
    assert explain(q, k, v, mask=mask).path == "qkv.functional.chunked_attention"
    assert explain(q[:, :, :1023], k, v, causal=True).path == "torch sdpa"  # shorter: torch's kernel
    assert explain(q, k, v, causal=True).path == "torch sdpa"  # is_causal builds no mask


def test_routing_table_names_the_file_when_malformed(monkeypatch, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"avx2": {}}))
    monkeypatch.setenv("QKV_ROUTING", str(bad))
    with pytest.raises(ValueError, match=r"bad\.json: needs an object with 'classes'"):
        routing.table()


def test_route_prints_path_reason_and_declines(monkeypatch, tmp_path):
    routing_table(monkeypatch, tmp_path, {})
    text = str(explain(*qkv_(64)))
    assert text.startswith("torch sdpa: torch's kernel with no mask or bias\n  declined qkv.kernels")


def test_doctor_report_names_the_table_and_routes_typical_shapes(monkeypatch, tmp_path):
    routing_table(monkeypatch, tmp_path, {})
    lines = qkv.kernels.report()
    assert "no measurements, nothing is routed to qkv's kernels" in lines[1]
    assert len(lines) > 3 and all(line.endswith(("torch sdpa", "qkv.functional.chunked_attention")) for line in lines[2:])


def test_doctor_build_says_what_happened():
    code = "from qkv.cli import main\nraise SystemExit(main(['doctor', '--build', '--device', 'cpu']))"
    env = {**os.environ, "CC": "/no/such/cc", "QKV_CACHE_DIR": "/nonexistent-qkv-cache"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("C kernels not built: ") and "every call stays on torch's paths" in first
    assert done.stderr.count("native attention kernels unavailable") <= 1  # one warning at most


def test_record_writes_this_class_and_the_dispatch_follows(monkeypatch, tmp_path):
    path = routing_table(monkeypatch, tmp_path, {})
    q, k, v = qkv_(48)
    routing.record("attention", "short", {"float32": 40}, "test", path)
    entry = json.loads(path.read_text())["classes"][qkv.hardware.cpu_isa()]["attention"]["short"]
    assert entry["min_len"] == {"float32": 40} and "CPU class" in entry["measured_on"]
    if native.kernels() is not None:
        assert explain(q, k, v).path == "qkv.kernels.short"
    routing.record("attention", "short", {}, "test", path)  # measured slower: removed
    assert explain(q, k, v).path == "torch sdpa"
    with pytest.raises(ValueError, match=r"no rule for op 'attention' and kernel 'padded'"):
        routing.record("attention", "padded", {"float32": 1}, "test", path)
