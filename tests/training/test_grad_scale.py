"""Gradient scaling and clipping: clip_grad_norm_ by default, the fused optimizer's grad_scale on request."""

import pytest
import torch

from qkv.training import TrainConfig, Trainer
from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss


def _train(**kw) -> tuple[dict[str, torch.Tensor], list[float]]:
    torch.manual_seed(0)
    cfg = TrainConfig(steps=6, lr=3e-2, warmup=1, log_every=1, progress=False, device="cpu", fused=True,
                      grad_accum=2, **kw)
    trainer = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), cfg)
    trainer.fit()
    norms = [r["grad_norm"] for r in trainer.writer.records if r["split"] == "train" and "grad_norm" in r]
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, norms


@pytest.mark.parametrize("grad_clip", [0.05, None])
def test_fused_grad_scale_gives_the_parameters_of_clip_grad_norm(grad_clip):
    """Clipping active at every step (0.05 is below the norms) and off: the same parameters and norms."""
    default, norms = _train(grad_clip=grad_clip)
    fused, fused_norms = _train(grad_clip=grad_clip, fused_grad_scale=True)
    torch.manual_seed(0)
    start = TinyLM(dropout=0.0).state_dict()
    assert not torch.equal(default["mlp.0.weight"], start["mlp.0.weight"])  # training moved the weights
    for name, value in default.items():
        torch.testing.assert_close(fused[name], value, atol=1e-5, rtol=1e-4)
    if grad_clip:
        assert norms and min(norms) > grad_clip  # the clip acted at every step
        assert fused_norms == pytest.approx(norms, rel=1e-4)


def test_fused_grad_scale_needs_fused_adamw():
    with pytest.raises(ValueError, match="fused_grad_scale needs fused AdamW.*fused=False"):
        TrainConfig(fused=False, fused_grad_scale=True)
    with pytest.raises(ValueError, match="strategy='fsdp'"):
        TrainConfig(fused_grad_scale=True, strategy="fsdp")
