"""Every family fits a tiny generated copy/reverse task to near-zero training loss.

A fixed set of 64 random sequences (tokens 3..9; 0 pad, 1 BOS, 2 EOS/separator) is fitted full-batch;
the test fails if the loss has not fallen below 0.05 within the step budget, or if fewer than
99% of the greedy teacher-forced predictions are right. Single-threaded: faster than oversubscribed cores.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qkv.models.config import DecoderConfig, EncoderConfig, RNNSeq2SeqConfig, Seq2SeqConfig
from qkv.models.decoder import DecoderModel
from qkv.models.encoder import EncoderModel
from qkv.models.rnn_seq2seq import RNNSeq2Seq
from qkv.models.seq2seq import EncoderDecoderModel

N, L, V, BOS, EOS = 64, 5, 10, 1, 2


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _sequences() -> torch.Tensor:
    return torch.randint(3, V, (N, L))


def _reverse_target(seqs: torch.Tensor) -> torch.Tensor:
    """``BOS reversed EOS``: ``(N, L + 2)``."""
    return torch.cat([torch.full((N, 1), BOS), seqs.flip(1), torch.full((N, 1), EOS)], dim=1)


def _fit(model: torch.nn.Module, logits_and_targets, *, steps: int, lr: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        logits, targets = logits_and_targets()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    model.eval()
    with torch.no_grad():
        logits, targets = logits_and_targets()
    accuracy = (logits.argmax(-1) == targets).float().mean().item()
    assert accuracy >= 0.99, f"greedy teacher-forced accuracy {accuracy:.3f} < 0.99"
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()


def test_encoder_classifier_fits_argmax_position():
    seqs = _sequences()
    labels = (seqs + 0.01 * torch.arange(L)).argmax(dim=1)  # position of the largest token (last on ties)
    model = EncoderModel(EncoderConfig(vocab_size=V, d_model=32, num_heads=4, num_layers=2, max_len=16,
                                       dropout=0.0, positional="learned", scale_embeddings=False, num_classes=L))
    assert _fit(model, lambda: (model.classify(seqs), labels), steps=200, lr=3e-3) < 0.05


def test_decoder_lm_fits_copy():
    seqs = _sequences()
    x = torch.cat([seqs, torch.full((N, 1), EOS), seqs], dim=1)  # "a b c d e SEP a b c d e"
    model = DecoderModel(DecoderConfig(vocab_size=V, d_model=32, num_heads=4, num_layers=2, max_len=16,
                                       dropout=0.0, norm_first=True, positional="rotary"))

    def copy_half():  # the first half is random: score only the copy
        return model(x[:, :-1])[:, L:], x[:, L + 1 :]

    assert _fit(model, copy_half, steps=300, lr=1e-2) < 0.05


def test_encoder_decoder_fits_reverse():
    seqs = _sequences()
    tgt = _reverse_target(seqs)
    model = EncoderDecoderModel(Seq2SeqConfig(src_vocab_size=V, d_model=32, num_heads=4, d_ff=64, max_len=16,
                                              num_encoder_layers=2, num_decoder_layers=2, dropout=0.0))
    assert _fit(model, lambda: (model(seqs, tgt[:, :-1]), tgt[:, 1:]), steps=300, lr=1e-2) < 0.05


@pytest.mark.parametrize("attention", [True, False])
def test_rnn_seq2seq_fits_reverse(attention):
    seqs = _sequences()
    tgt = _reverse_target(seqs)
    model = RNNSeq2Seq(RNNSeq2SeqConfig(src_vocab_size=V, embed_dim=16, hidden_size=32, attention=attention,
                                        dropout=0.0))
    assert _fit(model, lambda: (model(seqs, tgt[:, :-1]), tgt[:, 1:]), steps=250, lr=1e-2) < 0.05
