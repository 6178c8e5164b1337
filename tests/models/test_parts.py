"""Linear maps that decode through a cached transposed weight (qkv.modules.projection), in the models."""

import torch


def test_transposed_weight_cached_copy_equals_linear_and_follows_the_weight():
    from qkv.modules.projection import TransposedWeight as TiedOutput

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(101, 16, generator=g, requires_grad=True)
    out = TiedOutput()
    few, many = torch.randn(2, 3, 16, generator=g), torch.randn(5, 20, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(out(few, weight), torch.nn.functional.linear(few, weight), atol=1e-5, rtol=1e-5)
        cached = out._matrix
        assert cached is not None and cached.shape == (16, 101) and cached.is_contiguous()
        out(few, weight)
        assert out._matrix is cached  # reused while the weight is unchanged
        weight.mul_(2.0)  # an in-place update (an optimiser step, load_state_dict) bumps the version
        torch.testing.assert_close(out(few, weight), torch.nn.functional.linear(few, weight), atol=1e-5, rtol=1e-5)
        assert out._matrix is not cached
        rebuilt = out._matrix
        out(many, weight)  # 100 rows: straight F.linear, the cache is left alone
        assert out._matrix is rebuilt
    y = out(few, weight)  # autograd on: no copy, gradients reach the weight
    y.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


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


def test_linear_decodes_through_the_cache_and_keeps_nn_linear_state():
    import copy

    from qkv.modules.projection import Linear

    g = torch.Generator().manual_seed(1)
    lin = Linear(16, 40, cache_rows=3, cache_min_elements=0)
    ref = torch.nn.Linear(16, 40)
    ref.load_state_dict(lin.state_dict())  # same parameter names and shapes as nn.Linear
    assert set(lin.state_dict()) == {"weight", "bias"}
    x = torch.randn(3, 1, 16, generator=g, dtype=torch.float64)
    lin, ref = lin.double(), ref.double()
    with torch.no_grad():
        torch.testing.assert_close(lin(x), ref(x), atol=1e-12, rtol=1e-12)  # bias through addmm
        assert lin._transposed._matrix is not None and lin._transposed._matrix.shape == (16, 40)
        assert copy.deepcopy(lin)._transposed._matrix is None  # copies do not carry the cache
        cached = lin._transposed._matrix
        lin(torch.randn(4, 16, dtype=torch.float64))  # more rows than cache_rows: F.linear, cache untouched
        assert lin._transposed._matrix is cached
        lin.weight.add_(1.0)
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), atol=1e-12, rtol=1e-12)
    x.requires_grad_(True)
    torch.autograd.gradcheck(lambda t: lin(t), (x,))  # with autograd: F.linear on the parameters


def test_small_block_weights_skip_the_cache_large_ones_use_it():
    from qkv.modules.projection import Linear, TransposedWeight

    small, large = Linear(128, 512), Linear(768, 768)  # default: at least 2**18 weights, at most 2 rows
    with torch.no_grad():
        small(torch.randn(1, 128))
        large(torch.randn(1, 1, 768))
    assert small._transposed._matrix is None and large._transposed._matrix is not None
    other = Linear(768, 768)
    TransposedWeight.enabled = False  # switched off: no copy, the same result
    try:
        with torch.no_grad():
            x = torch.randn(1, 768)
            torch.testing.assert_close(other(x), torch.nn.functional.linear(x, other.weight, other.bias))
        assert other._transposed._matrix is None
    finally:
        TransposedWeight.enabled = True


def test_decoding_through_cached_block_weights_equals_f_linear():
    """A model whose block matrices are large enough for the cache decodes as with plain F.linear."""
    from qkv.generation import DecoderStepper
    from qkv.models import DecoderModel
    from qkv.models.registry import config
    from qkv.modules.projection import TransposedWeight

    torch.manual_seed(0)
    model = DecoderModel(config("gpt-char-small", vocab_size=50, num_layers=1, d_model=512, num_heads=8,
                                max_len=32, dropout=0.0)).eval()
    prompt = torch.randint(0, 50, (1, 5))

    def logits_per_step(enabled: bool) -> torch.Tensor:
        TransposedWeight.enabled = enabled
        try:
            with torch.no_grad():
                stepper = DecoderStepper(model, prompt, max_new_tokens=6)
                out = [stepper.start()]
                for _ in range(6):
                    out.append(stepper.step(out[-1].argmax(-1)))
            return torch.stack(out)  # (7, 1, V)
        finally:
            TransposedWeight.enabled = True

    cached = logits_per_step(True)
    assert model.decoder.layers[0].ff.w1._transposed._matrix is not None  # the cache was used
    torch.testing.assert_close(cached, logits_per_step(False), atol=1e-5, rtol=1e-5)
