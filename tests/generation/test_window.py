"""Past the context: the sliding window of generate / stream_generate, checked against a plain reference loop."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import generate, stream_generate
from tests.generation import tiny

V = 32  # a vocabulary wide enough that random models' greedy outputs vary along a row


def reference(model, prompt: list[int], T: int, C: int, penalty: float = 1.0) -> list[int]:
    """Greedy by the documented policy, one full forward pass (no cache) over the window per token: the model
    sees at most ``C`` tokens; a window that would pass ``C`` drops to the last ``C // 2``."""
    history = list(prompt)
    start = 0 if len(history) <= C else len(history) - C // 2
    out = []
    for _ in range(T):
        if len(history) - start > C:
            start = len(history) - C // 2
        window = history[start:]
        logits = model(torch.tensor([window]))[0, -1].double()  # (V,)
        if penalty != 1.0:  # CTRL on the tokens of the window
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[window] = True
            logits = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
        history.append(int(logits.argmax()))
        out.append(history[-1])
    return out


def rolling(model, prompt: list[int], T: int, C: int) -> list[int]:
    """Another policy (the last ``C`` tokens at every step), to show that the reference tells them apart."""
    history = list(prompt)
    for _ in range(T):
        history.append(int(model(torch.tensor([history[-C:]]))[0, -1].argmax()))
    return history[len(prompt) :]


def until(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("C", [8, 7])
@pytest.mark.parametrize("P", [3, 8, 13])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_past_the_context_equals_a_reference_loop(C, P, use_cache):
    model = tiny.decoder(vocab=V, max_len=C)
    prompt = torch.randint(1, V, (P,))
    with torch.no_grad():
        want = reference(model, prompt.tolist(), 3 * C, C)
        assert want != rolling(model, prompt.tolist(), 3 * C, C)
    got = generate(model, prompt, max_new_tokens=3 * C, use_cache=use_cache)
    assert got.tolist() == want


@pytest.mark.parametrize("positional", ["rotary", "alibi"])
def test_relative_positions_slide_the_same_way(positional):
    model = tiny.decoder(vocab=V, max_len=8, positional=positional)
    prompt = torch.randint(1, V, (5,))
    with torch.no_grad():
        want = reference(model, prompt.tolist(), 20, 8)
    assert generate(model, prompt, max_new_tokens=20).tolist() == want


def test_repetition_penalty_counts_the_tokens_of_the_window():
    model = tiny.decoder(vocab=V, max_len=8)
    prompt = torch.randint(1, V, (6,))
    with torch.no_grad():
        want = reference(model, prompt.tolist(), 20, 8, penalty=1.8)
    assert generate(model, prompt, max_new_tokens=20, repetition_penalty=1.8).tolist() == want


def test_stream_generate_yields_generate_tokens_past_the_context():
    model = tiny.sharpen(tiny.decoder(max_len=8), 2.0)
    ids, kp = tiny.left_pad([[3, 4, 5, 6, 7], [8, 9], [5, 6, 7, 8, 9, 10, 11, 12, 3, 4]])
    opts = dict(max_new_tokens=25, key_padding=kp, strategy="sample", top_k=6, eos_id=4, pad_id=0)
    want = generate(model, ids, seed=5, **opts)
    assert want.shape == (3, 25)  # some row went on past the context (8)
    got = torch.zeros_like(want)
    steps = []
    for st in stream_generate(model, ids, seed=5, **opts):
        got[st.rows, st.step] = st.tokens
        steps.append(st.step)
    assert steps == list(range(len(steps))) and len(steps) == want.shape[1]
    assert torch.equal(got, want)


def test_left_padded_batch_with_eos_past_the_context_equals_each_row_alone():
    """Rows slide when their own window is full; a row that emits EOS stays finished, padded after it."""
    C, T = 8, 30
    model = tiny.decoder(vocab=V, max_len=C)
    prompts = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [5, 6, 7, 8, 9, 10, 11, 12, 3, 4, 5]]
    solo = [generate(model, torch.tensor(p), max_new_tokens=T).tolist() for p in prompts]
    # EOS: a token that one row emits early and another not before it has passed the context
    eos = next(t for t in range(V) if any(t in s[:4] for s in solo) and any(t not in s[: C + 2] for s in solo))
    want = [until(s, eos) for s in solo]
    assert min(len(w) for w in want) < C and max(len(w) for w in want) > C  # one ends, one slides on
    ids, kp = tiny.left_pad(prompts, pad_id=12)
    out = generate(model, ids, key_padding=kp, max_new_tokens=T, eos_id=eos, pad_id=0)
    for row, w in zip(out.tolist(), want, strict=True):
        assert row[: len(w)] == w and all(t == 0 for t in row[len(w) :])


def test_min_new_tokens_and_force_eos_count_across_windows():
    model = tiny.decoder(max_len=6)
    out = generate(model, torch.randint(1, 13, (2, 4)), max_new_tokens=20, eos_id=2, min_new_tokens=19,
                   force_eos=True)
    assert out.shape == (2, 20)
    assert not bool((out[:, :19] == 2).any()) and bool((out[:, 19] == 2).all())


def test_beam_search_does_not_slide():
    model = tiny.decoder(max_len=8)
    ids = torch.randint(3, 13, (1, 5))
    out = generate(model, ids, max_new_tokens=4, strategy="beam", num_beams=2)  # 5 + 4 - 1 = 8 = C: fits
    assert out.shape[1] <= 4
    with pytest.raises(ValueError, match=r"max_new_tokens \(5\).*context \(8\).*at most 4"):
        generate(model, ids, max_new_tokens=5, strategy="beam", num_beams=2)
    with pytest.raises(ValueError, match=r"input_ids has 9 tokens.*context \(8\)"):
        generate(model, torch.randint(3, 13, (1, 9)), max_new_tokens=1, strategy="beam")


def test_models_without_a_context_never_slide():
    model = tiny.LinearLM().eval()
    prompt = torch.randint(1, 11, (5,))
    with torch.no_grad():
        want = reference(model, prompt.tolist(), 12, C=10**6)
    assert generate(model, prompt, max_new_tokens=12).tolist() == want
