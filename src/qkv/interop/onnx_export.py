"""Export to ONNX (and ``torch.export``): the encoder, and one decoder step with an explicit KV cache.

Notation: B batch, L length, P cached positions, H_kv key/value heads, E head dim, D d_model, V vocabulary.

qkv's :class:`~qkv.modules.KVCache` is a preallocated buffer with a Python-int fill level: state that a
graph cannot hold. For export, the cache becomes graph inputs and outputs: :class:`ConcatCache` holds
the past keys/values ``(B, H_kv, P, E)`` of one layer and appends this step's, so one exported step maps
``(ids (B, 1), past k/v per layer)`` to ``(logits (B, 1, V), present k/v (B, H_kv, P + 1, E) per layer)``;
a prefill graph turns the prompt into the first past, so generation can run on ONNX alone.
The ONNX graphs are written by ``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` and ``onnxscript``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from qkv.modules.blocks import LayerCache

__all__ = [
    "ConcatCache",
    "EncoderGraph",
    "DecoderStepGraph",
    "DecoderPrefillGraph",
    "Seq2SeqEncoderGraph",
    "Seq2SeqDecodeGraph",
    "export_seq2seq_onnx",
    "export_encoder",
    "export_decoder_step",
    "export_encoder_onnx",
    "export_decoder_step_onnx",
    "export_decoder_prefill_onnx",
]


class ConcatCache:
    """A self-attention cache held in tensors: ``update`` returns past + new along the time axis.

    Duck-types the parts of :class:`~qkv.modules.KVCache` that attention reads (``static``,
    ``length``, ``update``), so traced graphs take and return the cache as plain tensors.

    Args:
        k: past keys ``(B, H_kv, P, E)``.
        v: past values ``(B, H_kv, P, E)``.
    """

    static = False

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v

    @property
    def length(self) -> int:
        """Cached positions P."""
        return self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``(B, H_kv, L, E)`` keys/values; return everything ``(B, H_kv, P + L, E)``."""
        self.k = torch.cat([self.k, k], dim=2)
        self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v


class EncoderGraph(nn.Module):
    """``(ids (B, L), mask (B, L) bool, segments (B, L)) -> hidden (B, L, D)`` of an ``EncoderModel``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        segments = segments if self.model.embed.segment is not None else None
        return self.model(ids, key_padding=mask, segments=segments)


class DecoderStepGraph(nn.Module):
    """One cached step of a ``DecoderModel``: ``(ids (B, L), k_0, v_0, ..., k_N-1, v_N-1)`` ->
    ``(logits (B, L, V), present k_0, v_0, ...)`` with past/present caches ``(B, H_kv, P, E)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.model.config.num_layers
        if len(past) != 2 * n:
            raise ValueError(f"expected {2 * n} past tensors (k, v per layer), got {len(past)}")
        caches = [ConcatCache(past[2 * i], past[2 * i + 1]) for i in range(n)]
        logits = self.model(ids, cache=caches)  # (B, L, V)
        present = [t for c in caches for t in (c.k, c.v)]
        return (logits, *present)


class DecoderPrefillGraph(nn.Module):
    """The first call of a ``DecoderModel``: ``ids (B, L)`` -> ``(logits (B, L, V), present k_0, v_0, ...)``
    with caches ``(B, H_kv, L, E)`` that :class:`DecoderStepGraph` continues from."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg, p = self.model.config, self.model.embed.token.weight
        empty = ids.new_zeros(ids.shape[0], cfg.num_kv_heads, 0, cfg.head_dim, dtype=p.dtype)  # (B, H_kv, 0, E)
        caches = [ConcatCache(empty, empty) for _ in range(cfg.num_layers)]
        logits = self.model(ids, cache=caches)  # (B, L, V)
        return (logits, *(t for c in caches for t in (c.k, c.v)))


class Seq2SeqEncoderGraph(nn.Module):
    """``(src (B, S), src_mask (B, S) bool) -> memory (B, S, D)`` of an ``EncoderDecoderModel``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(src, src_mask)


class Seq2SeqDecodeGraph(nn.Module):
    """Decoder calls of an ``EncoderDecoderModel`` with the self-attention cache as tensors.

    ``(ids (B, L), memory (B, S, D), src_mask (B, S), *past)`` -> ``(logits (B, L, V), *present)``, with
    past/present ``(B, H_kv, P, E)`` per layer (k, v). ``first=True`` takes no past (the BOS call).
    Cross-attention keys/values are recomputed from ``memory`` at each call (a graph input, not state).
    """

    def __init__(self, model: nn.Module, *, first: bool) -> None:
        super().__init__()
        self.model, self.first = model, first

    def forward(self, ids, memory, src_mask, *past):
        cfg = self.model.config
        if self.first:
            empty = memory.new_zeros(ids.shape[0], cfg.num_kv_heads, 0, cfg.head_dim)  # (B, H_kv, 0, E)
            past = (empty,) * (2 * cfg.num_decoder_layers)
        caches = [LayerCache(ConcatCache(past[2 * i], past[2 * i + 1])) for i in range(cfg.num_decoder_layers)]
        logits = self.model.decode(ids, memory, src_mask, cache=caches)  # (B, L, V)
        return (logits, *(t for c in caches for t in (c.self_attn.k, c.self_attn.v)))


def _encoder_inputs(model: nn.Module, batch: int, length: int):
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, length // 2 :] = False  # a padded row, so the mask is a real input
    return ids, mask, torch.zeros(batch, length, dtype=torch.long)


def _encoder_dims(model: nn.Module):
    B, L = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=2, max=model.config.max_len)
    return ({0: B, 1: L},) * 3


def export_encoder(model: nn.Module, *, batch: int = 2, length: int = 8) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`EncoderGraph` with dynamic batch and length."""
    graph = EncoderGraph(model.eval()).eval()
    return torch.export.export(graph, _encoder_inputs(model, batch, length), dynamic_shapes=_encoder_dims(model))


def _past(model: nn.Module, batch: int, past: int) -> list[torch.Tensor]:
    cfg = model.config
    return [torch.randn(batch, cfg.num_kv_heads, past, cfg.head_dim) for _ in range(2 * cfg.num_layers)]


def _step_dims(model: nn.Module):
    B = torch.export.Dim("batch", min=1)
    P = torch.export.Dim("past", min=1, max=model.config.max_len - 1)
    return ({0: B}, tuple({0: B, 2: P} for _ in range(2 * model.config.num_layers)))  # (ids, *past)


def export_decoder_step(model: nn.Module, *, batch: int = 2, past: int = 4) -> torch.export.ExportedProgram:
    """``torch.export`` of :class:`DecoderStepGraph` (one new token, ``past >= 1`` cached positions)."""
    graph = DecoderStepGraph(model.eval()).eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, 1))
    return torch.export.export(graph, (ids, *_past(model, batch, past)), dynamic_shapes=_step_dims(model))


def _names(model: nn.Module, kind: str) -> list[str]:
    return [f"{kind}_{t}_{i}" for i in range(model.config.num_layers) for t in ("k", "v")]


def export_decoder_prefill_onnx(model: nn.Module, path: str | Path, *, opset: int = 18) -> Path:
    """Write the prompt pass as ONNX: input ``ids (B, L)``, outputs ``logits (B, L, V)`` and
    ``present_k_i, present_v_i (B, H_kv, L, E)``: the past of :func:`export_decoder_step_onnx`."""
    path = Path(path)
    graph = DecoderPrefillGraph(model.eval()).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    dims = ({0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("length", min=1, max=model.config.max_len)},)
    with _quiet():
        torch.onnx.export(graph, (ids,), str(path), dynamo=True, opset_version=opset, input_names=["ids"],
                          output_names=["logits", *_names(model, "present")], dynamic_shapes=dims, optimize=True,
                          verbose=False)
    return path


def export_seq2seq_onnx(model: nn.Module, folder: str | Path, *, opset: int = 18) -> dict[str, Path]:
    """Write an ``EncoderDecoderModel`` as three ONNX graphs in ``folder``.

    ``encoder.onnx``: ``src, src_mask (B, S)`` -> ``memory (B, S, D)``; ``decoder_first.onnx``:
    ``ids (B, L), memory, src_mask`` -> ``logits (B, L, V)``, ``present_k_i, present_v_i``;
    ``decoder_step.onnx``: the same plus ``past_k_i, past_v_i (B, H_kv, P, E)``, ``P >= 1``.

    Returns:
        ``{"encoder": path, "decoder_first": path, "decoder_step": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, cfg = model.eval(), model.config
    B, S = torch.export.Dim("batch", min=1), torch.export.Dim("src_len", min=2, max=cfg.max_len)
    L, P = torch.export.Dim("length", min=1, max=cfg.max_len), torch.export.Dim("past", min=1, max=cfg.max_len - 1)
    src = torch.randint(0, cfg.src_vocab_size, (2, 7))
    src_mask = torch.ones(2, 7, dtype=torch.bool)
    src_mask[1, 4:] = False
    with torch.no_grad():
        memory = model.encode(src, src_mask)
    past = [torch.randn(2, cfg.num_kv_heads, 3, cfg.head_dim) for _ in range(2 * cfg.num_decoder_layers)]
    names = [f"{t}_{i}" for i in range(cfg.num_decoder_layers) for t in ("k", "v")]
    shared = ({0: B, 1: S}, {0: B, 1: S})  # memory, src_mask
    jobs = {
        "encoder": (Seq2SeqEncoderGraph(model), (src, src_mask), ({0: B, 1: S}, {0: B, 1: S}),
                    ["src", "src_mask"], ["memory"]),
        "decoder_first": (Seq2SeqDecodeGraph(model, first=True), (src[:, :2], memory, src_mask),
                          ({0: B, 1: L}, *shared), ["ids", "memory", "src_mask"],
                          ["logits", *(f"present_{n}" for n in names)]),
        "decoder_step": (Seq2SeqDecodeGraph(model, first=False), (src[:, :1], memory, src_mask, *past),
                         ({0: B}, *shared, tuple({0: B, 2: P} for _ in past)),
                         ["ids", "memory", "src_mask", *(f"past_{n}" for n in names)],
                         ["logits", *(f"present_{n}" for n in names)]),
    }
    paths = {}
    for name, (graph, args, dims, inputs, outputs) in jobs.items():
        paths[name] = folder / f"{name}.onnx"
        with _quiet():
            torch.onnx.export(graph.eval(), args, str(paths[name]), dynamo=True, opset_version=opset,
                              input_names=inputs, output_names=list(outputs), dynamic_shapes=dims, optimize=True,
                              verbose=False)
    return paths


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's notes that dynamic axes shared by several inputs keep one name (expected)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"# The axis name")
        yield


def export_encoder_onnx(model: nn.Module, path: str | Path, *, opset: int = 18) -> Path:
    """Write the encoder as ONNX: inputs ``ids, mask, segments`` ``(B, L)``, output ``hidden (B, L, D)``.

    ``mask`` is bool (True = real token). Batch and length are dynamic.
    """
    path = Path(path)
    graph = EncoderGraph(model.eval()).eval()
    with _quiet():
        torch.onnx.export(graph, _encoder_inputs(model, 2, 8), str(path), dynamo=True, opset_version=opset,
                          input_names=["ids", "mask", "segments"], output_names=["hidden"],
                          dynamic_shapes=_encoder_dims(model), optimize=True, verbose=False)
    return path


def export_decoder_step_onnx(model: nn.Module, path: str | Path, *, opset: int = 18) -> Path:
    """Write one cached decoder step as ONNX.

    Inputs ``ids (B, 1)``, ``past_k_i, past_v_i (B, H_kv, P, E)`` per layer (``P >= 1``: the first
    past comes from :func:`export_decoder_prefill_onnx`'s graph, or from PyTorch); outputs ``logits (B, 1, V)`` and
    ``present_k_i, present_v_i (B, H_kv, P + 1, E)``.
    """
    path = Path(path)
    graph = DecoderStepGraph(model.eval()).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 1))
    with _quiet():
        torch.onnx.export(graph, (ids, *_past(model, 2, 4)), str(path), dynamo=True, opset_version=opset,
                          input_names=["ids", *_names(model, "past")],
                          output_names=["logits", *_names(model, "present")],
                          dynamic_shapes=_step_dims(model), optimize=True, verbose=False)
    return path
