"""Bad input raises ValueError naming the argument (and its value) before any decoding."""

from __future__ import annotations

import pytest
import torch

from qkv.generation import generate, stream_generate, translate
from tests.generation import tiny


@pytest.fixture(scope="module")
def lm():
    return tiny.decoder(max_len=16)


@pytest.mark.parametrize(
    ("ids", "kwargs", "match"),
    [
        (torch.zeros(1, 0, dtype=torch.long), {}, "input_ids"),
        (torch.zeros(0, 3, dtype=torch.long), {}, "input_ids"),
        (torch.ones(1, 17, dtype=torch.long), {"strategy": "beam"}, r"input_ids has 17 tokens.*context \(16\)"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "beam", "max_new_tokens": 15}, r"max_new_tokens \(15\)"),
        (torch.ones(1, 3, dtype=torch.long), {"max_new_tokens": -1}, r"max_new_tokens.*-1"),
        (torch.ones(1, 3, dtype=torch.long), {"max_new_tokens": 2.5}, "max_new_tokens"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "top_p": 0.0}, r"top_p.*0\.0"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "top_p": 1.2}, r"top_p.*1\.2"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "temperature": 0.0}, "temperature"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "temperature": -0.5}, "temperature"),
        (torch.ones(1, 3, dtype=torch.long), {"top_k": 0}, "top_k"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "beam", "num_beams": 0}, "num_beams"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "nucleus"}, "strategy"),
        (torch.ones(1, 3, dtype=torch.long), {"min_new_tokens": -2}, "min_new_tokens"),
        (torch.ones(1, 3), {}, "input_ids"),
        (torch.ones(2, 3, dtype=torch.long), {"key_padding": torch.tensor([[1, 1, 1], [0, 0, 0]]).bool()},
         r"key_padding leaves rows \[1\]"),
        (torch.ones(2, 3, dtype=torch.long), {"key_padding": torch.ones(2, 4, dtype=torch.bool)}, "key_padding"),
    ],
)
def test_generate_rejects(lm, ids, kwargs, match):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(lm, ids, **kwargs)


def test_stream_rejects_beam_and_unknown_options(lm):
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="beam"):
        next(stream_generate(lm, ids, max_new_tokens=3, strategy="beam"))
    with pytest.raises(ValueError, match="top_z"):
        next(stream_generate(lm, ids, max_new_tokens=3, top_z=3))


@pytest.mark.parametrize(
    ("src", "kwargs", "match"),
    [
        (torch.zeros(2, 0, dtype=torch.long), {}, "src"),
        (torch.ones(1, 3, dtype=torch.long), {"max_len": -1}, "max_len"),
        (torch.ones(1, 3, dtype=torch.long), {"bos_id": None}, "bos_id"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "top_p": 2.0}, "top_p"),
        (torch.ones(1, 3, dtype=torch.long), {"strategy": "sample", "temperature": 0}, "temperature"),
        (torch.tensor([[0, 0, 0]]), {}, r"src_mask leaves rows \[0\]"),
    ],
)
@pytest.mark.parametrize("family", ["seq2seq", "rnn"])
def test_translate_rejects(src, kwargs, match, family):
    model = tiny.seq2seq() if family == "seq2seq" else tiny.rnn()
    kwargs = {"max_len": 4, "bos_id": 1, "eos_id": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        translate(model, src, **kwargs)


def test_zero_new_tokens_is_empty_not_an_error(lm):
    assert generate(lm, torch.ones(2, 3, dtype=torch.long), max_new_tokens=0).shape == (2, 0)
    assert generate(lm, torch.ones(2, 3, dtype=torch.long), max_new_tokens=0, strategy="beam").shape == (2, 0)


def test_greedy_on_nan_logits_is_an_error_not_token_zero():
    model = tiny.decoder(max_len=16)
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 2).fill_(float("nan"))
    with pytest.raises(ValueError, match="logits hold NaN at step 0"):
        generate(model, torch.ones(1, 3, dtype=torch.long), max_new_tokens=4)
