"""qkv decoding vs Hugging Face ``GPT2LMHeadModel.generate`` on the same random weights (no download)."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import generate
from qkv.interop import from_transformers

transformers = pytest.importorskip("transformers")

V = 23


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=40, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF's init makes a random GPT-2 repeat its input token; these weights vary more
        for name, p in hf.named_parameters():
            if "wte" in name:
                p.mul_(0.3)
            elif p.dim() == 2:
                p.mul_(4.0)
    return hf, from_transformers(hf).eval()


def _hf(hf, ids, n, **kw):
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, **kw)
    return out[:, ids.shape[1]:]


def _until(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos) + 1] if eos in row else row


def _eos_for(tokens: torch.Tensor) -> int:
    """The token that, as EOS, ends the most rows after step 0 (so that EOS handling is exercised)."""
    rows = tokens.tolist()

    def ends(c: int) -> tuple[int, int]:
        at = [r.index(c) for r in rows if c in r]
        return sum(e >= 1 for e in at), len(set(at))

    best = max({t for r in rows for t in r}, key=ends)
    assert ends(best)[0] >= 1, rows
    return best


def test_greedy_matches_hf(pair):
    hf, ours = pair
    ids = torch.randint(1, V, (3, 5))
    want = _hf(hf, ids, 15)
    assert min(len(set(r)) for r in want.tolist()) >= 3, want  # not a degenerate repeat
    assert torch.equal(generate(ours, ids, max_new_tokens=15), want)


def test_greedy_with_eos_matches_hf(pair):
    hf, ours = pair
    ids = torch.randint(1, V, (3, 5))
    eos = _eos_for(_hf(hf, ids, 12))
    want = _hf(hf, ids, 12, eos_token_id=eos, pad_token_id=0)
    got = generate(ours, ids, max_new_tokens=12, eos_id=eos, pad_id=0)
    assert [_until(r, eos) for r in got.tolist()] == [_until(r, eos) for r in want.tolist()]


@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_search_matches_hf(pair, num_beams):
    """Same rule as HF with length_penalty 0 and early_stopping=True (top 2K, EOS only in the top K)."""
    hf, ours = pair
    ids = torch.randint(1, V, (3, 5))
    eos = _eos_for(_hf(hf, ids, 10))
    want = _hf(hf, ids, 10, num_beams=num_beams, early_stopping=True, length_penalty=0.0, eos_token_id=eos,
               pad_token_id=0)
    got = generate(ours, ids, max_new_tokens=10, strategy="beam", num_beams=num_beams, early_stopping=True,
                   length_penalty=0.0, eos_id=eos, pad_id=0)
    assert any(eos in r for r in want.tolist()), want
    assert [_until(r, eos) for r in got.tolist()] == [_until(r, eos) for r in want.tolist()]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                                             (0.9, 8, 0.9)])
def test_sampling_matches_hf_draw_for_draw(pair, temperature, top_k, top_p):
    """Same processors (temperature, then top-k, then top-p) and the same global RNG stream: same samples."""
    hf, ours = pair
    ids = torch.randint(1, V, (4, 5))
    torch.manual_seed(123)
    with torch.no_grad():
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=True,
                           temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0)[:, 5:]
    torch.manual_seed(123)
    got = generate(ours, ids, max_new_tokens=12, strategy="sample", temperature=temperature, top_k=top_k,
                   top_p=top_p)
    assert torch.equal(got, want)
