"""What each kind of run needs to serve: prompts to ids, a batched decoding session, results to JSON.

Notation: N rows decoded together, P prompt length, S source (or key) length, H heads.

A :class:`GenerativeBackend` (language model or translator) turns a request into a :class:`Prepared` row
and builds one :class:`~qkv.generation.steps.Stepper` for a batch of rows: prompts are left-padded for a
language model (``key_padding`` + per-row positions), sources right-padded with a source mask for a
translator. An :class:`EncoderBackend` classifies and embeds texts. Every user error is a
:class:`BadRequest` that names the request field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qkv.data.labelled import text_batch
from qkv.data.parallel import source_batch
from qkv.generation import (
    DecoderStepper,
    EncoderDecoderStepper,
    RNNStepper,
    Stepper,
    context_length,
    generate,
    translate,
)
from qkv.recipes.classify import embed
from qkv.recipes.run import LoadedRun
from qkv.serve.text import token_label

__all__ = ["BadRequest", "Prepared", "GenerativeBackend", "LMBackend", "TranslationBackend", "EncoderBackend",
           "backend_for"]


class BadRequest(ValueError):
    """A request the server refuses: ``status`` (4xx), the request field ``param`` and a message."""

    def __init__(self, param: str | None, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.message, self.status = param, message, status


@dataclass
class Prepared:
    """One validated row: its input ids, how many tokens it may produce, and labels of its keys."""

    ids: list[int]
    limit: int
    key_labels: list[str]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class GenerativeBackend:
    """Shared parts of the language-model and translator backends."""

    task = ""
    cross = False  # whose attention the weights are: cross-attention (translator) or self-attention (LM)

    def __init__(self, run: LoadedRun, tokenizer: Any, context: int | None) -> None:
        self.run, self.model, self.tokenizer, self.context = run, run.model, tokenizer, context
        self.device = _device(run.model)

    @property
    def eos_id(self) -> int | None:
        return None

    @property
    def max_tokens(self) -> int:
        """The largest ``max_tokens`` a request may ask for."""
        return self.context or 512

    def check_max_tokens(self, max_tokens: int) -> None:
        if max_tokens > self.max_tokens:
            raise BadRequest("max_tokens", f"max_tokens must be <= {self.max_tokens} for this model, got {max_tokens}")

    def num_layers(self) -> int:
        cfg = self.run.config
        return int(getattr(cfg, "num_decoder_layers", None) or getattr(cfg, "num_layers", None) or 1)

    def label(self, token: int) -> str:
        return token_label(self.tokenizer, token)

    def weights(self, stepper: Stepper) -> list[torch.Tensor] | None:
        """The attention of the last step, one ``(N, H, S)`` per layer, if the stepper kept it."""
        w = getattr(stepper, "weights", None)
        if isinstance(w, torch.Tensor):  # the RNN's one additive map (N, S)
            return [w[:, None]]
        return w


class LMBackend(GenerativeBackend):
    """A decoder-only language model: the prompt is continued."""

    task = "lm"

    def __init__(self, run: LoadedRun) -> None:
        super().__init__(run, run.tokenizer, context_length(run.model))

    def prepare(self, prompt: str, max_tokens: int) -> Prepared:
        self.check_max_tokens(max_tokens)
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise BadRequest("prompt", "prompt encodes to no tokens")
        if self.context is not None and len(ids) >= self.context:
            raise BadRequest("prompt", f"prompt has {len(ids)} tokens; the model's context is {self.context}, "
                                       "leave room for at least one new token")
        limit = max_tokens if self.context is None else min(max_tokens, self.context - len(ids))
        return Prepared(ids, limit, [self.label(i) for i in ids])

    def stepper(self, rows: list[Prepared], keep_weights: bool) -> tuple[Stepper, list[slice]]:
        P = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), P), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), P, dtype=torch.bool)
        for i, r in enumerate(rows):  # left padding: every row's last prompt token is at P - 1
            ids[i, P - len(r.ids) :] = torch.tensor(r.ids)
            mask[i, P - len(r.ids) :] = True
        T = max(r.limit for r in rows)
        stepper = DecoderStepper(self.model, ids.to(self.device), key_padding=mask.to(self.device),
                                 max_new_tokens=T, keep_weights=keep_weights)
        return stepper, [slice(P - len(r.ids), None) for r in rows]

    def beam(self, row: Prepared, num_beams: int) -> list[int]:
        ids = torch.tensor([row.ids], device=self.device)
        out = generate(self.model, ids, max_new_tokens=row.limit, strategy="beam", num_beams=num_beams)
        return out[0].tolist()


class TranslationBackend(GenerativeBackend):
    """An encoder-decoder (Transformer or RNN): the prompt is the source sentence."""

    task = "translation"
    cross = True

    def __init__(self, run: LoadedRun) -> None:
        super().__init__(run, run.tokenizer.target, context_length(run.model))
        self.source = run.tokenizer.source

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_id

    def prepare(self, prompt: str, max_tokens: int) -> Prepared:
        self.check_max_tokens(max_tokens)
        src, _ = source_batch([prompt], self.source)  # ids + <eos>, as in training
        ids = src[0].tolist()
        if self.context is not None and len(ids) > self.context:
            raise BadRequest("prompt", f"prompt has {len(ids)} tokens (with </s>); the model's context is "
                                       f"{self.context}")
        limit = max_tokens if self.context is None else min(max_tokens, self.context)
        return Prepared(ids, limit, [token_label(self.source, i) for i in ids])

    def stepper(self, rows: list[Prepared], keep_weights: bool) -> tuple[Stepper, list[slice]]:
        S = max(len(r.ids) for r in rows)
        src = torch.full((len(rows), S), self.source.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), S, dtype=torch.bool)
        for i, r in enumerate(rows):  # right padding, masked out of the cross-attention
            src[i, : len(r.ids)] = torch.tensor(r.ids)
            mask[i, : len(r.ids)] = True
        src, mask = src.to(self.device), mask.to(self.device)
        bos = self.tokenizer.bos_id
        if hasattr(self.model, "decode_step"):
            stepper: Stepper = RNNStepper(self.model, src, mask, bos_id=bos)
        else:
            T = max(r.limit for r in rows)
            stepper = EncoderDecoderStepper(self.model, src, mask, bos_id=bos, max_len=T, keep_weights=keep_weights)
        return stepper, [slice(0, len(r.ids)) for r in rows]

    def beam(self, row: Prepared, num_beams: int) -> list[int]:
        src = torch.tensor([row.ids], device=self.device)
        t = self.tokenizer
        out = translate(self.model, src, max_len=row.limit, strategy="beam", num_beams=num_beams, bos_id=t.bos_id,
                        eos_id=t.eos_id, pad_id=t.pad_id)
        return out[0].tolist()


class EncoderBackend:
    """An encoder run: class probabilities (with a head) and sentence embeddings."""

    task = "classify"

    def __init__(self, run: LoadedRun) -> None:
        self.run, self.model, self.tokenizer = run, run.model, run.tokenizer
        self.context = context_length(run.model)
        n = int(getattr(run.config, "num_classes", 0) or 0)
        self.labels = list(run.extra.get("labels") or [str(i) for i in range(n)])

    @torch.no_grad()
    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        if not self.labels:
            raise BadRequest(None, "this encoder has no classification head; use /v1/embeddings", 404)
        ids, mask = text_batch(texts, self.tokenizer, max_len=self.context)
        device = _device(self.model)
        probs = self.model.classify(ids.to(device), key_padding=mask.to(device)).float().softmax(-1).cpu()
        out = []
        for i, row in enumerate(probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"index": i, "label": self.labels[best], "label_id": best,
                        "probabilities": {name: round(p, 6) for name, p in zip(self.labels, row, strict=True)}})
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        return embed(self.model, self.tokenizer, texts).tolist()


def backend_for(run: LoadedRun) -> GenerativeBackend | EncoderBackend:
    """The backend of a loaded run, by its task."""
    kinds = {"lm": LMBackend, "translation": TranslationBackend, "classify": EncoderBackend}
    if run.task not in kinds:
        raise ValueError(f"cannot serve a run of task {run.task!r}; known: {sorted(kinds)}")
    return kinds[run.task](run)
