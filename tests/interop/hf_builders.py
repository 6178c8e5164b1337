"""Small random Hugging Face models saved into a folder with ``transformers`` (no download)."""

from __future__ import annotations

from pathlib import Path

import torch


def randomize(model: torch.nn.Module) -> None:
    """Random LayerNorm affines, biases and output biases (HF inits them to 1/0), so a wrong copy cannot pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if "norm" in low or "ln_" in low or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.add_(0.1 * torch.randn_like(b))


def save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def gpt2(transformers, folder: Path, **overrides):
    kw = dict(vocab_size=53, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=5,
              initializer_range=0.2)
    cfg = transformers.GPT2Config(**(kw | overrides))
    model = transformers.GPT2LMHeadModel(cfg).eval()
    randomize(model)
    return save(model, folder), model


def bert(transformers, folder: Path, **overrides):
    kw = dict(vocab_size=57, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              max_position_embeddings=24, type_vocab_size=2, initializer_range=0.2)
    model = transformers.BertModel(transformers.BertConfig(**(kw | overrides)), add_pooling_layer=False).eval()
    randomize(model)
    return save(model, folder), model


def _seq2seq_kw(**overrides) -> dict:
    kw = dict(vocab_size=61, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40,
              init_std=0.2, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
              forced_eos_token_id=None)
    return kw | overrides


def bart(transformers, folder: Path, **overrides):
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**_seq2seq_kw(**overrides))).eval()
    randomize(model)
    return save(model, folder), model


def marian(transformers, folder: Path, **overrides):
    kw = _seq2seq_kw(pad_token_id=60, decoder_start_token_id=60, bos_token_id=None, eos_token_id=0, **overrides)
    model = transformers.MarianMTModel(transformers.MarianConfig(**kw)).eval()
    randomize(model)
    return save(model, folder), model
