"""Shared model parts: the tied output projection used while decoding."""

import torch


def test_tied_output_cached_copy_equals_linear_and_follows_the_weight():
    from qkv.models.parts import TiedOutput

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
