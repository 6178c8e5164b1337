"""Loss adapters on qkv's own models and batches; the trainer end to end on qkv data loaders."""

import pytest
import torch
import torch.nn.functional as F

from qkv.data import CharTokenizer, PackedTextDataset, ParallelDataset, load_tokenizer, make_loader
from qkv.models import DecoderConfig, DecoderModel, EncoderDecoderModel, Seq2SeqConfig
from qkv.models.config import RNNSeq2SeqConfig
from qkv.models.rnn_seq2seq import RNNSeq2Seq
from qkv.training import TrainConfig, Trainer, load_checkpoint, read_config
from qkv.training.losses import lm_loss, loss_for, seq2seq_loss

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


def _pairs():
    words = ["abc", "hello", "qkv", "attention", "x", "data"]
    return [(w, w[::-1]) for w in words] * 3


def _tiny_decoder(vocab):
    return DecoderConfig(vocab_size=vocab, num_layers=1, d_model=16, num_heads=2, max_len=16, dropout=0.1,
                         positional="learned", norm_first=True, pad_id=None)


def test_seq2seq_loss_matches_torch_cross_entropy():
    tok = CharTokenizer.train([s + t for s, t in _pairs()])
    data = ParallelDataset.from_pairs(_pairs(), tok)
    batch = next(iter(make_loader(data, batch_size=5, shuffle=False)))
    for model in (
        EncoderDecoderModel(Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                          num_encoder_layers=1, num_decoder_layers=1, d_model=16, num_heads=2,
                                          dropout=0.0, max_len=32)),
        RNNSeq2Seq(RNNSeq2SeqConfig(src_vocab_size=tok.vocab_size, embed_dim=8, hidden_size=8, dropout=0.0)),
    ):
        loss, n = loss_for(model, smoothing=0.1)(model, batch)
        assert n.item() == int((batch.tgt_out != tok.pad_id).sum()) == int(batch.tgt_lengths.sum())
        logits = model(batch.src, batch.tgt_in, batch.src_mask)  # one call order for both families
        ref = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=tok.pad_id,
                              label_smoothing=0.1)
        torch.testing.assert_close(loss, ref)
        assert loss_for(model).func is seq2seq_loss


def test_decoder_on_packed_text_resumes_bit_exactly_through_loader_skip(tmp_path):
    """qkv's EpochDataLoader starts mid-epoch with set_epoch(e, skip=k); the run continues exactly."""
    tok = CharTokenizer.train([TEXT])
    data = PackedTextDataset.from_text(TEXT, tok, block_size=16)
    cfg = _tiny_decoder(tok.vocab_size)
    kw = dict(steps=6, lr=1e-2, warmup=2, log_every=1, eval_every=3, progress=False, device="cpu", fused=False,
              precision="fp32")

    def trainer(out):
        loader = make_loader(data, batch_size=16, seed=0)  # 4 batches per epoch
        model = DecoderModel(cfg)
        return Trainer(model, loss_for(model), loader, TrainConfig(out_dir=str(out), **kw),
                       eval_data=make_loader(data, batch_size=32, shuffle=False), model_config=cfg, tokenizer=tok)

    torch.manual_seed(0)
    full = trainer(tmp_path / "full")
    full.fit()
    torch.manual_seed(0)
    first = trainer(tmp_path / "half")
    first.fit(until=3)  # mid-epoch
    torch.manual_seed(7)
    second = trainer(tmp_path / "half")
    second.resume(tmp_path / "half")
    second.fit()
    losses = [[r["loss"] for r in t.writer.records if r["split"] == "train"] for t in (full, first, second)]
    assert losses[1] + losses[2] == losses[0]
    for a, b in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = load_checkpoint(tmp_path / "half")
    assert DecoderConfig.from_dict(read_config(saved.path)) == cfg
    assert load_tokenizer(saved.path).encode("fox") == tok.encode("fox")


def test_loss_for_rejects_unknown_models():
    with pytest.raises(TypeError, match="Linear"):
        loss_for(torch.nn.Linear(2, 2))
    model = DecoderModel(_tiny_decoder(7))
    assert loss_for(model).func is lm_loss
