"""qkv -> save_pretrained -> transformers: the same logits; and qkv -> save -> qkv is exact."""

from __future__ import annotations

import json

import pytest
import torch

from qkv.interop import load_pretrained, save_pretrained
from qkv.models import DecoderConfig, DecoderModel, EncoderConfig, EncoderModel
from tests.interop import hf_builders

transformers = pytest.importorskip("transformers")


def _perturb(model: torch.nn.Module) -> None:
    """Move every weight away from what was loaded, so the saved file must carry qkv's values."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_gpt2_round_trip_through_transformers(tmp_path):
    cfg = DecoderConfig(vocab_size=41, num_layers=2, d_model=32, num_heads=4, max_len=16, positional="learned",
                        norm_first=True, activation="gelu_tanh", scale_embeddings=False, pad_id=None, dropout=0.0)
    ours = DecoderModel(cfg).eval()
    _perturb(ours)
    save_pretrained(ours, tmp_path / "gpt2")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "gpt2")).eval()
    ids = torch.randint(0, 41, (2, 16))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() <= 1e-4
    assert torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)  # tied on the way back


def test_bert_round_trip_through_transformers(tmp_path):
    cfg = EncoderConfig(vocab_size=45, num_layers=2, d_model=32, num_heads=4, d_ff=40, max_len=20,
                        positional="learned", activation="gelu", scale_embeddings=False, num_segments=2,
                        embedding_norm=True, norm_eps=1e-12, dropout=0.0)
    ours = EncoderModel(cfg).eval()
    _perturb(ours)
    save_pretrained(ours, tmp_path / "bert")
    hf = transformers.BertModel.from_pretrained(str(tmp_path / "bert"), add_pooling_layer=False).eval()
    ids = torch.randint(1, 45, (2, 20))
    segments = torch.randint(0, 2, (2, 20))
    with torch.no_grad():
        want = hf(ids, token_type_ids=segments).last_hidden_state
        assert (want - ours(ids, segments=segments)).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["bart", "marian"])
def test_seq2seq_round_trip_through_transformers(tmp_path, kind):
    folder, _ = getattr(hf_builders, kind)(transformers, tmp_path / "hf")
    ours, _ = load_pretrained(folder)
    _perturb(ours)
    with torch.no_grad():
        ours.final_logits_bias.add_(0.1)
    save_pretrained(ours, tmp_path / "qkv")
    cls = transformers.BartForConditionalGeneration if kind == "bart" else transformers.MarianMTModel
    hf = cls.from_pretrained(str(tmp_path / "qkv")).eval()
    src, tgt = torch.randint(3, 59, (2, 9)), torch.randint(3, 59, (2, 6))
    with torch.no_grad():
        want = hf(input_ids=src, decoder_input_ids=tgt).logits
        assert (want - ours(src, tgt, torch.ones_like(src, dtype=torch.bool))).abs().max() <= 1e-4
    saved = json.loads((tmp_path / "qkv" / "config.json").read_text())
    assert saved["decoder_start_token_id"] == ours.bos_id and saved["model_type"] == kind


def test_qkv_round_trip_is_exact(tmp_path):
    folder, _ = hf_builders.gpt2(transformers, tmp_path / "hf")
    first, _ = load_pretrained(folder)
    second, _ = load_pretrained(save_pretrained(first, tmp_path / "again"))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_save_refuses_what_hugging_face_cannot_express(tmp_path):
    rotary = DecoderModel(DecoderConfig(vocab_size=11, num_layers=1, d_model=16, num_heads=2, positional="rotary",
                                        norm_first=True))
    with pytest.raises(ValueError, match=r"positional='rotary' \(needs 'learned'\)"):
        save_pretrained(rotary, tmp_path)
    with pytest.raises(ValueError, match="no Hugging Face family"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)
