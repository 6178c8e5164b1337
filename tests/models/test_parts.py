"""Linear maps that decode through cached weight copies (qkv.modules.projection), alone and in the models."""

import copy

import pytest
import torch

from qkv.modules.projection import DecodeWeights, Linear


def test_transposed_copy_equals_linear_and_follows_the_weight():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(101, 16, generator=g, requires_grad=True)
    out = DecodeWeights(min_elements=0)
    few, many = torch.randn(2, 1, 16, generator=g), torch.randn(5, 60, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(out(few, weight), torch.nn.functional.linear(few, weight), atol=1e-5, rtol=1e-5)
        cached = out._matrix
        assert cached is not None and cached.shape == (1, 16, 101) and cached.is_contiguous()  # small: one slice
        out(few, weight)
        assert out._matrix is cached  # reused while the weight is unchanged
        weight.mul_(2.0)  # an in-place update (an optimiser step, load_state_dict) bumps the version
        torch.testing.assert_close(out(few, weight), torch.nn.functional.linear(few, weight), atol=1e-5, rtol=1e-5)
        assert out._matrix is not cached
        rebuilt = out._matrix
        torch.testing.assert_close(out(many, weight), torch.nn.functional.linear(many, weight))  # 300 rows: F.linear
        assert out._matrix is rebuilt and out._packed is None
    y = out(few, weight)  # autograd on: no copy, gradients reach the weight
    y.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_onednn_copy_for_more_rows_equals_linear_and_follows_weight_and_bias():
    torch.manual_seed(0)
    lin = Linear(512, 640)  # 327,680 weights: over the 2**18 threshold
    ref = torch.nn.Linear(512, 640)
    ref.load_state_dict(lin.state_dict())  # the same parameter names and shapes as nn.Linear
    assert set(lin.state_dict()) == {"weight", "bias"}
    x = torch.randn(3, 5, 512)  # 15 rows: the oneDNN copy
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ref(x), atol=1e-5, rtol=1e-5)
        packed = lin._decode._packed
        assert packed is not None and packed[0].is_mkldnn and lin._decode._matrix is None
        lin(x)
        assert lin._decode._packed is packed
        lin.bias.add_(1.0)  # a bias change alone rebuilds the copy
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
        assert lin._decode._packed is not packed
        one = torch.randn(1, 1, 512)  # one row: the transposed copy
        torch.testing.assert_close(lin(one), torch.nn.functional.linear(one, lin.weight, lin.bias), atol=1e-5,
                                   rtol=1e-5)
        assert lin._decode._matrix is not None and lin._decode._packed is None  # one copy at a time
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
        assert lin._decode._packed is None  # more rows now reuse the transposed copy: nothing rebuilt
        assert copy.deepcopy(lin)._decode._matrix is None  # copies do not carry the caches
        x64 = torch.randn(2, 512, dtype=torch.float64)  # other dtypes: F.linear
        lin64 = copy.deepcopy(lin).double()
        torch.testing.assert_close(lin64(x64), torch.nn.functional.linear(x64, lin64.weight, lin64.bias))
        assert lin64._decode._packed is None and lin64._decode._matrix is None
    x = torch.randn(4, 512, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: lin64(t), (x,))  # with autograd: F.linear on the parameters


@pytest.mark.parametrize("bias", [True, False])
def test_threads_slice_the_transposed_copy(bias):
    """With T threads one or two rows multiply T column slices of weight^T (the last one zero-padded)."""
    torch.manual_seed(0)
    lin = Linear(512, 641, bias=bias)  # 328,192 weights, an odd output size
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            for threads in (2, 3, 1):
                torch.set_num_threads(threads)
                x = torch.randn(2, 1, 512)
                torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias),
                                           atol=1e-5, rtol=1e-5)
                assert lin._decode._matrix.shape == (threads, 512, -(-641 // threads))
                many = torch.randn(7, 512)  # more rows reuse the sliced copy
                torch.testing.assert_close(lin(many), torch.nn.functional.linear(many, lin.weight, lin.bias),
                                           atol=1e-5, rtol=1e-5)
                assert lin._decode._packed is None
    finally:
        torch.set_num_threads(before)


def test_small_weights_and_the_switch_take_f_linear():
    small, large = Linear(128, 512), Linear(768, 768)
    with torch.no_grad():
        small(torch.randn(1, 128))
        large(torch.randn(1, 1, 768))
    assert small._decode._matrix is None and large._decode._matrix is not None
    other = Linear(768, 768)
    DecodeWeights.enabled = False  # switched off: no copy, the same result
    try:
        with torch.no_grad():
            x = torch.randn(1, 768)
            torch.testing.assert_close(other(x), torch.nn.functional.linear(x, other.weight, other.bias))
        assert other._decode._matrix is None
    finally:
        DecodeWeights.enabled = True


def test_decoding_logits_use_the_cached_output_matrix():
    from qkv.models import DecoderModel
    from qkv.models.registry import config

    model = DecoderModel(config("gpt-char-small", vocab_size=50, num_layers=1, d_model=32, num_heads=2)).eval()
    ids = torch.randint(0, 50, (2, 5))
    want = model(ids)  # grad enabled: F.linear
    with torch.no_grad():
        got = model(ids)
    assert model._tied_output._matrix is not None
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 4])
def test_decoding_through_cached_block_weights_equals_f_linear(batch):
    """A model whose block matrices are large enough for the caches decodes as with plain F.linear."""
    from qkv.generation import DecoderStepper
    from qkv.models import DecoderModel
    from qkv.models.registry import config

    torch.manual_seed(0)
    model = DecoderModel(config("gpt-char-small", vocab_size=50, num_layers=1, d_model=512, num_heads=8,
                                max_len=32, dropout=0.0)).eval()
    prompt = torch.randint(0, 50, (batch, 5))

    def logits_per_step(enabled: bool) -> torch.Tensor:
        DecodeWeights.enabled = enabled
        try:
            with torch.no_grad():
                stepper = DecoderStepper(model, prompt, max_new_tokens=6)
                out = [stepper.start()]
                for _ in range(6):
                    out.append(stepper.step(out[-1].argmax(-1)))
            return torch.stack(out)  # (7, B, V)
        finally:
            DecodeWeights.enabled = True

    cached = logits_per_step(True)
    w1 = model.decoder.layers[0].ff.w1._decode
    assert (w1._matrix if batch == 1 else w1._packed) is not None  # the copy for this many rows was used
    torch.testing.assert_close(cached, logits_per_step(False), atol=1e-5, rtol=1e-5)
