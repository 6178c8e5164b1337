"""Translation recipes: parallel data (files or generated dates/copy/reverse/sort), Transformer or RNN
encoder-decoder, label-smoothed training, greedy/beam translation, exact match and BLEU."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qkv.data import ParallelDataset, make_loader, read_aligned, read_tsv_pairs, synthetic
from qkv.data.parallel import source_batch
from qkv.data.tokenizer_pair import TokenizerPair, train_tokenizer_pair
from qkv.generation import translate
from qkv.models.rnn_seq2seq import RNNSeq2Seq
from qkv.recipes.config import DecodeConfig, InputTooLong, Recipe, RecipeError
from qkv.training.losses import seq2seq_loss

__all__ = ["TranslationData", "build_data", "loss_fn", "translate_texts", "attention_maps", "test_pairs"]

Pairs = list[tuple[str, str]]


@dataclass
class TranslationData:
    tokenizers: TokenizerPair
    train: ParallelDataset
    valid: Pairs
    test: Pairs


def _pairs_from(spec: Any, what: str) -> Pairs:
    if isinstance(spec, str):
        return read_tsv_pairs(spec)
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        src, tgt = read_aligned(spec[0], spec[1])
        return list(zip(src, tgt, strict=True))
    raise RecipeError(f"data.{what} must be [source_file, target_file] or a TSV path, got {spec!r}")


def _splits(recipe: Recipe) -> dict[str, Pairs]:
    d = recipe.data
    if d.source == "dates":
        return synthetic.date_splits(d.n_train, d.n_valid, d.n_test, seed=d.seed)
    if d.source in ("copy", "reverse", "sort"):
        return synthetic.sequence_splits(d.source, d.n_train, d.n_valid, d.n_test, seed=d.seed,
                                         max_len=d.max_length)
    if d.source != "files":
        raise RecipeError(f"translation cannot use data.source={d.source!r}")
    if d.train is None:
        raise RecipeError("data.train is required for data.source=files")
    out = {"train": _pairs_from(d.train, "train")}
    out["validation"] = _pairs_from(d.valid, "valid") if d.valid else []
    out["test"] = _pairs_from(d.test, "test") if d.test else []
    return out


def build_data(recipe: Recipe) -> TranslationData:
    """Splits, tokenizers trained on the training side only, and the tokenised training set."""
    splits = _splits(recipe)
    train = splits["train"]
    if recipe.data.source == "dates":
        tok = synthetic.date_tokenizer()
        pair = TokenizerPair(tok, tok)
    else:
        t = recipe.tokenizer
        pair = train_tokenizer_pair([s for s, _ in train], [y for _, y in train], kind=t.kind, joint=t.joint,
                                    vocab_size=t.vocab_size, min_frequency=t.min_frequency)
    ds = ParallelDataset.from_pairs(train, pair.source, pair.target, max_len=recipe.data.max_len)
    return TranslationData(pair, ds, splits["validation"], splits["test"])


def loader(recipe: Recipe, ds: ParallelDataset, *, shuffle: bool = True):
    d = recipe.data
    return make_loader(ds, max_tokens=d.max_tokens, batch_size=d.batch_size, shuffle=shuffle, seed=d.seed)


def loss_fn(smoothing: float, pad_id: int):
    """``(model, batch) -> (mean label-smoothed loss over real target tokens, number of them)``."""
    return functools.partial(seq2seq_loss, smoothing=smoothing, pad_id=pad_id)


def _decode_options(dec: DecodeConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {"strategy": dec.strategy}
    if dec.strategy == "beam":
        opts.update(num_beams=dec.num_beams, length_penalty=dec.length_penalty)
    if dec.strategy == "sample":
        opts.update(temperature=dec.temperature, top_k=dec.top_k, top_p=dec.top_p)
    return opts


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence ``model`` can read (its positional table), or None when it has no such limit."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "positional", "none") in ("none", "alibi"):
        return None
    return getattr(cfg, "max_len", None)


def _check_lengths(model: nn.Module, tokenizers: TokenizerPair, texts: Sequence[str], dec: DecodeConfig) -> None:
    """Raise :class:`InputTooLong` for the first source longer than the model reads (``<eos>`` included)."""
    limit = max_positions(model)
    if limit is None:
        return
    if dec.max_len + 1 > limit:
        raise RecipeError(f"decode max_len ({dec.max_len}) must be below the model's max_len ({limit})")
    for i, ids in enumerate(tokenizers.source.encode_batch(list(texts))):
        if len(ids) + 1 > limit:
            raise InputTooLong(i, len(ids) + 1, limit)


@torch.no_grad()
def translate_texts(model: nn.Module, tokenizers: TokenizerPair, texts: Sequence[str], dec: DecodeConfig,
                    *, batch_size: int = 128) -> list[str]:
    """Translate strings in batches (sorted by length to waste little padding), keeping their order.

    Raises:
        InputTooLong: a text longer than the model reads (its index is on the exception).
    """
    _check_lengths(model, tokenizers, texts, dec)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        src, mask = source_batch([texts[i] for i in idx], tokenizers.source)
        tgt = tokenizers.target
        ids = translate(model, src.to(device), mask.to(device), max_len=dec.max_len, bos_id=tgt.bos_id,
                        eos_id=tgt.eos_id, pad_id=tgt.pad_id, **_decode_options(dec))
        for i, row in zip(idx, ids.tolist(), strict=True):
            out[i] = tokenizers.target.decode(row)
    model.train(was_training)
    return out


@torch.no_grad()
def attention_maps(model: nn.Module, tokenizers: TokenizerPair, source: str, output: str) -> dict[str, Any]:
    """Attention of one translated sentence, teacher-forced on ``output``.

    Returns:
        ``{"source_tokens", "output_tokens", "cross": [per layer (H, L, S)], ...}``; for the Transformer also
        ``"encoder"`` and ``"self"`` per layer; for the RNN ``"cross"`` holds its one additive map ``(1, L, S)``.
    """
    src_tok, tgt_tok = tokenizers.source, tokenizers.target
    src, mask = source_batch([source], src_tok)
    tgt_ids = tgt_tok.encode(output)
    device = next(model.parameters()).device
    tgt_in = torch.tensor([[tgt_tok.bos_id] + tgt_ids], device=device)
    batch = _OneBatch(src.to(device), mask.to(device), tgt_in)
    model.eval()
    _, weights = model(batch.src, batch.tgt_in, batch.src_mask, return_weights=True)
    labels = {
        "source_tokens": [_piece(src_tok, i) for i in src[0].tolist()],
        "output_tokens": [_piece(tgt_tok, i) for i in tgt_ids] + ["</s>"],
    }
    if isinstance(model, RNNSeq2Seq):
        return {**labels, "cross": [weights[0].unsqueeze(0).cpu()]}  # (1, L, S)
    return {**labels, **{k: [w[0].cpu() for w in v] for k, v in weights.items()}}


@dataclass
class _OneBatch:
    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor


def _piece(tok: Any, i: int) -> str:
    if i == tok.eos_id:
        return "</s>"
    text = tok.id_to_token(i) if hasattr(tok, "id_to_token") else tok.decode([i])
    return text.replace("\u0120", "_").replace(" ", "_") or "?"


def test_pairs(recipe: Recipe) -> tuple[Pairs, str]:
    """The recipe's own test split and what it is: generated pairs (rebuilt from the seed) or ``data.test``.

    Raises:
        RecipeError: the recipe reads files and names no ``data.test``.
    """
    d = recipe.data
    if d.source != "files":
        pairs = _splits(recipe)["test"]
        return pairs, f"the recipe's {len(pairs):,} generated {d.source} test pairs (seed {d.seed})"
    if not d.test:
        raise RecipeError("the run's recipe names no data.test")
    pairs = _pairs_from(d.test, "test")
    return pairs, f"data.test ({len(pairs):,} pairs: {d.test})"
