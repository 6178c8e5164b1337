"""Cached decoding equals uncached recomputation, step by step (max abs logit diff <= 1e-5, fp32)."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import DecoderStepper, EncoderDecoderStepper, RNNStepper, generate
from tests.generation import tiny

TOL = 1e-5


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _compare_sessions(cached, uncached, tokens: torch.Tensor, selects: dict[int, torch.Tensor] | None = None):
    """Drive both steppers with the same tokens ``(T, B)``; check the logits at every step.

    ``selects[t]`` is applied to both (and to the remaining tokens) before step ``t``.
    """
    selects = selects or {}
    diffs = [_max_diff(cached.start(), uncached.start())]
    rows = torch.arange(tokens.shape[1])
    for t in range(tokens.shape[0]):
        if t in selects:
            for s in (cached, uncached):
                s.select(selects[t])
            rows = rows[selects[t]]
        diffs.append(_max_diff(cached.step(tokens[t, rows]), uncached.step(tokens[t, rows])))
    assert max(diffs) <= TOL, f"per-step max abs diffs {diffs}"
    return diffs


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary", "alibi"])
@pytest.mark.parametrize("kv_heads", [None, 2, 1], ids=["mha", "gqa2", "mqa"])
def test_decoder_cached_equals_uncached(positional, kv_heads):
    model = tiny.decoder(kv_heads=kv_heads, positional=positional)
    ids = torch.randint(1, 13, (3, 6))
    tokens = torch.randint(1, 13, (10, 3))

    def make(use_cache):
        return DecoderStepper(model, ids, max_new_tokens=10, use_cache=use_cache)

    with torch.no_grad():
        _compare_sessions(make(True), make(False), tokens)


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary", "alibi"])
def test_decoder_left_padding_cached_equals_uncached_and_unpadded(positional):
    model = tiny.decoder(positional=positional, kv_heads=2)
    prompts = [[5, 6, 7, 8, 9, 10], [3, 4], [11, 2, 12, 4]]
    ids, kp = tiny.left_pad(prompts)
    tokens = torch.randint(1, 13, (8, 3))
    with torch.no_grad():
        cached = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=8)
        uncached = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=8, use_cache=False)
        _compare_sessions(cached, uncached, tokens)
        # Each padded row also matches the same prompt decoded alone, without padding.
        padded = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=8)
        got = [padded.start()] + [padded.step(tokens[t]) for t in range(8)]
        for b, p in enumerate(prompts):
            alone = DecoderStepper(model, torch.tensor([p]), max_new_tokens=8)
            want = [alone.start()] + [alone.step(tokens[t, b : b + 1]) for t in range(8)]
            assert max(_max_diff(g[b : b + 1], w) for g, w in zip(got, want, strict=True)) <= TOL


def test_decoder_cache_survives_row_selection():
    """Dropping finished rows and beam-style reordering with repeats keep cached == uncached."""
    model = tiny.decoder(kv_heads=2)
    ids, kp = tiny.left_pad([[1, 2, 3], [4, 5], [6, 7, 8], [9]])
    tokens = torch.randint(1, 13, (9, 4))
    selects = {3: torch.tensor([0, 2, 3]), 5: torch.tensor([2, 2, 0]), 7: torch.tensor([1])}
    with torch.no_grad():
        cached = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=9)
        uncached = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=9, use_cache=False)
        _compare_sessions(cached, uncached, tokens, selects)


@pytest.mark.parametrize("kv_heads", [None, 2], ids=["mha", "gqa"])
def test_encoder_decoder_cached_equals_uncached(kv_heads):
    model = tiny.seq2seq(kv_heads=kv_heads)
    src = torch.randint(1, 13, (3, 7))
    src[1, 5:] = 0  # padding (pad_id 0)
    mask = src != 0
    tokens = torch.randint(1, 13, (9, 3))
    selects = {4: torch.tensor([2, 0, 0, 1]), 6: torch.tensor([3, 1])}
    with torch.no_grad():
        cached = EncoderDecoderStepper(model, src, mask, bos_id=1, max_len=10, rows=4)
        uncached = EncoderDecoderStepper(model, src, mask, bos_id=1, max_len=10, use_cache=False)
        _compare_sessions(cached, uncached, tokens, selects)


def test_encoder_decoder_cross_attention_is_computed_once():
    """The source keys/values are projected at the first step only (static caches), never again."""
    model = tiny.seq2seq()
    src = torch.randint(1, 13, (2, 5))
    seen = []
    orig = torch.nn.functional.linear

    def spy(x, w, b=None):
        seen.append(tuple(x.shape))
        return orig(x, w, b)

    with torch.no_grad():
        stepper = EncoderDecoderStepper(model, src, bos_id=1, max_len=6)
        stepper.start()
        torch.nn.functional.linear = spy
        try:
            stepper.step(torch.tensor([3, 4]))
        finally:
            torch.nn.functional.linear = orig
    # After the first step no linear layer sees the (B, S, D) memory again.
    assert all(s[1] != 5 for s in seen if len(s) == 3), seen
    assert all(c.cross_attn.length == 5 for c in stepper.cache)


def test_rnn_stepper_equals_teacher_forcing():
    model = tiny.rnn(cell="lstm")
    src = torch.randint(1, 13, (3, 6))
    tgt = torch.randint(1, 13, (3, 5))
    tgt[:, 0] = 1
    with torch.no_grad():
        want = model(src, tgt)  # (B, L, V)
        stepper = RNNStepper(model, src, src != 0, bos_id=1)
        got = [stepper.start()] + [stepper.step(tgt[:, t]) for t in range(1, 5)]
    assert _max_diff(torch.stack(got, 1), want) <= TOL


def test_linear_attention_o1_state_fits_the_protocol():
    """A per-layer state that is not a KVCache (linear attention's running sums) decodes as an RNN."""
    model = tiny.LinearLM().eval()
    ids = torch.randint(0, 11, (3, 4))
    tokens = torch.randint(0, 11, (7, 3))
    with torch.no_grad():
        cached = DecoderStepper(model, ids, max_new_tokens=7)
        uncached = DecoderStepper(model, ids, max_new_tokens=7, use_cache=False)
        _compare_sessions(cached, uncached, tokens, {2: torch.tensor([2, 0, 0])})
        assert cached.cache[0].s.shape == (3, 2, 8, 8)  # O(1): no time axis
        for strategy in ("greedy", "beam"):
            a = generate(model, ids, max_new_tokens=6, strategy=strategy, num_beams=3, eos_id=3)
            b = generate(model, ids, max_new_tokens=6, strategy=strategy, num_beams=3, eos_id=3, use_cache=False)
            assert torch.equal(a, b)
