"""Decoding through weight slices and copies (qkv.generation.prepare): products equal F.linear, copies live
in a block."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.generation import DecoderStepper, DecodingWeights, generate, prepare_for_decoding, stream_generate
from qkv.models import DecoderConfig, DecoderModel
from tests.models.test_live_weights import CHANGES
from tests.models.test_live_weights import _fresh_copy as fresh_copy
from tests.models.test_live_weights import _lm as lm_for_weight_changes


def _lm(d_model: int = 512) -> DecoderModel:
    """One layer wide enough (512 x 1536 in_proj) for the copies' default size threshold."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=50, d_model=d_model, num_heads=8, num_layers=1, max_len=32, dropout=0.0)
    return DecoderModel(cfg).eval()


def _products(copies: DecodingWeights, x: torch.Tensor, weight, bias=None, times: int = 3) -> list[torch.Tensor]:
    with torch.no_grad():
        return [copies.linear(x, weight, bias) for _ in range(times)]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 2, 15])
@pytest.mark.parametrize("bias", [True, False])
def test_products_through_the_copies_equal_f_linear(threads, rows, bias):
    """Row slices of the weight itself (1-2 rows, one slice per thread, an out size no thread count divides: the
    rest rows apart) and the oneDNN copy (15 rows)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(641, 512, generator=g)  # 328,192 weights: over the thresholds
    b = torch.randn(641, generator=g) if bias else None
    x = torch.randn(rows, 1, 512, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        copies = DecodingWeights(nn.Identity())
        outs = _products(copies, x, weight, b)
        assert copies.num_copies == (1 if rows > 2 else 0)  # a copy made at the second product, then reused
    finally:
        torch.set_num_threads(before)
    for y in outs:
        torch.testing.assert_close(y, F.linear(x, weight, b), atol=1e-4, rtol=1e-5)


def test_small_weights_autograd_other_dtypes_and_the_switch_take_f_linear():
    copies = DecodingWeights(nn.Identity())
    small, large = torch.randn(512, 128), torch.randn(768, 768)
    _products(copies, torch.randn(8, 128), small)
    assert copies.num_copies == 0
    _products(copies, torch.randn(8, 768).double(), large.double())
    assert copies.num_copies == 0
    DecodingWeights.enabled = False
    try:
        _products(copies, torch.randn(8, 768), large)
        assert copies.num_copies == 0
    finally:
        DecodingWeights.enabled = True
    _products(copies, torch.randn(8, 768), large)
    assert copies.num_copies == 1
    w = large.clone().requires_grad_()
    x = torch.randn(4, 768, dtype=torch.float64, requires_grad=True)
    y = copies.linear(x.float(), w)  # autograd on: F.linear, gradients reach the weight; the copies are dropped
    y.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0 and copies.num_copies == 0


def test_a_block_replaces_forwards_and_restores_them():
    model = _lm()
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert linears and model.tied_output is not None
    with prepare_for_decoding(model):
        assert all("forward" in lin.__dict__ for lin in linears)
        with prepare_for_decoding(model):  # nested: leaves the layers to the outer block
            pass
        assert all("forward" in lin.__dict__ for lin in linears)
    assert not any("forward" in mod.__dict__ for mod in model.modules())
    assert set(model.state_dict()) == set(_lm().state_dict())  # nothing of it in the state dict


@pytest.mark.parametrize("batch", [1, 4])
def test_decoding_in_a_block_equals_plain_decoding(batch):
    """Greedy steps through the weight slices (one row) and the oneDNN copies (four rows) give F.linear's logits."""
    model = _lm()
    prompt = torch.randint(0, 50, (batch, 5))

    def logits_per_step() -> torch.Tensor:
        with torch.no_grad():
            stepper = DecoderStepper(model, prompt, max_new_tokens=6)
            out = [stepper.start()]
            for _ in range(6):
                out.append(stepper.step(out[-1].argmax(-1)))
        return torch.stack(out)  # (7, B, V)

    with prepare_for_decoding(model) as copies:
        fast = logits_per_step()
        # four rows: in_proj, out_proj, w1, w2 copied (the 50 x 512 output table is under the size); one: none
        assert copies.num_copies == (4 if batch == 4 else 0)
    torch.testing.assert_close(fast, logits_per_step(), atol=1e-4, rtol=1e-4)


def test_streams_and_generate_leave_the_model_plain():
    model = _lm()
    ids = torch.randint(0, 50, (1, 4))
    want = generate(model, ids, max_new_tokens=5)
    stream = stream_generate(model, ids, max_new_tokens=5)
    first = next(stream)
    assert "forward" in model.tied_output.__dict__  # held while the stream is open
    rest = list(stream)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.cat([first.tokens] + [s.tokens for s in rest]).tolist() == want[0].tolist()


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_block_held_across_calls_follows_every_weight_change(change):
    """Inside one block: copies made, weights changed (training through the model, load_state_dict, .data,
    new Parameters, in-place ops), then evaluation and decoding equal a fresh model's."""
    model = lm_for_weight_changes()
    ids = torch.randint(1, 50, (2, 6))
    with prepare_for_decoding(model) as copies:
        for _ in range(2):
            generate(model, ids, max_new_tokens=3)
            generate(model, ids[:1], max_new_tokens=3)
        assert copies.num_copies == 2  # the feed-forward matrices, copied for the prompts (12 and 6 rows)
        CHANGES[change](model)
        fresh = fresh_copy(model)
        for rows in (ids, ids[:1, :1], ids[:1, :1]):
            with torch.no_grad():
                torch.testing.assert_close(model(rows), fresh(rows), atol=1e-5, rtol=1e-5)
        assert torch.equal(generate(model, ids, max_new_tokens=5), generate(fresh, ids, max_new_tokens=5))
        assert torch.equal(generate(model, ids[:1], max_new_tokens=5), generate(fresh, ids[:1], max_new_tokens=5))
