"""Model configurations: typed dataclasses with derived fields and a JSON round trip.

Every config validates itself in ``__post_init__`` (ValueErrors print the offending values), fills
derived fields (``d_ff = 4 * d_model``, ``head_dim = d_model // num_heads``, ...), and converts with
``to_dict()`` / ``from_dict()`` (``to_json()`` / ``from_json()``). Derived fields that are not
constructor arguments (``head_dim``) are left out of the dict and recomputed on load.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qkv.modules.feed_forward import ACTIVATIONS

__all__ = ["TransformerConfig", "EncoderConfig", "DecoderConfig", "Seq2SeqConfig", "RNNSeq2SeqConfig", "POSITIONAL"]

POSITIONAL = ("sinusoidal", "learned", "rotary", "alibi", "none")
_FFN = tuple(ACTIVATIONS) + ("swiglu", "geglu")

C = TypeVar("C", bound="_Serializable")


class _Serializable:
    """``to_dict`` / ``from_dict`` / JSON for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from :meth:`to_dict` output; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields are {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


def _positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _probability(**values: float) -> None:
    for name, v in values.items():
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")


@dataclass(kw_only=True)
class TransformerConfig(_Serializable):
    """Fields shared by the Transformer families. Defaults are the paper's base model.

    Attributes:
        d_model: model size D; must be divisible by ``num_heads``.
        num_heads: attention heads H.
        num_kv_heads: key/value heads (grouped-query attention); default H.
        d_ff: feed-forward hidden size; default ``4 * d_model``.
        dropout: dropout on embeddings and sublayer outputs (and FFN hidden units).
        attention_dropout: dropout on attention weights; default ``dropout``.
        max_len: longest sequence (positional table / rotary table size).
        positional: "sinusoidal" | "learned" | "rotary" | "alibi" | "none".
        rotary_base: RoPE frequency base.
        norm_first: False = post-LN (paper, BERT), True = pre-LN (GPT-2).
        final_norm: LayerNorm after the last block; default ``norm_first``.
        norm_eps: LayerNorm epsilon.
        activation: FFN activation ("relu", "gelu", "gelu_tanh", "silu") or gated ("swiglu", "geglu").
        bias: biases in attention and FFN projections.
        scale_embeddings: multiply token embeddings by ``sqrt(d_model)`` (paper: yes; GPT/BERT: no).
        attention: the attention kernel's name for :func:`qkv.modules.attend.build_attend`.
        attention_options: keyword options for that kernel.
        pad_id: padding token id (None: no padding token).
        head_dim: derived, ``d_model // num_heads``.
    """

    d_model: int = 512
    num_heads: int = 8
    num_kv_heads: int | None = None
    d_ff: int | None = None
    dropout: float = 0.1
    attention_dropout: float | None = None
    max_len: int = 512
    positional: str = "sinusoidal"
    rotary_base: float = 10000.0
    norm_first: bool = False
    final_norm: bool | None = None
    norm_eps: float = 1e-5
    activation: str = "relu"
    bias: bool = True
    scale_embeddings: bool = True
    attention: str = "softmax"
    attention_options: dict[str, Any] = field(default_factory=dict)
    pad_id: int | None = 0
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        _positive(d_model=self.d_model, num_heads=self.num_heads, max_len=self.max_len)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        self.head_dim = self.d_model // self.num_heads
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        _positive(num_kv_heads=self.num_kv_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        _positive(d_ff=self.d_ff)
        if self.attention_dropout is None:
            self.attention_dropout = self.dropout
        _probability(dropout=self.dropout, attention_dropout=self.attention_dropout)
        if self.final_norm is None:
            self.final_norm = self.norm_first
        if self.positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {self.positional!r}")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.positional == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {self.head_dim} (d_model {self.d_model})")
        if self.activation not in _FFN:
            raise ValueError(f"activation must be one of {_FFN}, got {self.activation!r}")
        if not isinstance(self.attention, str) or not isinstance(self.attention_options, dict):
            raise ValueError(
                f"attention must be a kernel name (str) and attention_options a dict, got "
                f"{self.attention!r} and {self.attention_options!r}"
            )


def _check_pad(pad_id: int | None, **vocabs: int) -> None:
    for name, v in vocabs.items():
        _positive(**{name: v})
        if pad_id is not None and not 0 <= pad_id < v:
            raise ValueError(f"pad_id ({pad_id}) must lie in [0, {name}={v})")


@dataclass(kw_only=True)
class EncoderConfig(TransformerConfig):
    """Encoder-only model (BERT-like): contextual embeddings, pooling, optional classifier.

    Attributes:
        vocab_size: V.
        num_layers: encoder blocks.
        num_segments: segment (token type) embeddings; 0 for none.
        embedding_norm: LayerNorm on the summed embeddings (BERT).
        pooling: "mean" (over real tokens) or "cls" (first token).
        num_classes: size of the classification head; 0 for none.
    """

    vocab_size: int
    num_layers: int = 6
    num_segments: int = 0
    embedding_norm: bool = False
    pooling: str = "mean"
    num_classes: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(num_layers=self.num_layers)
        _check_pad(self.pad_id, vocab_size=self.vocab_size)
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.num_segments < 0 or self.num_classes < 0:
            raise ValueError(f"num_segments ({self.num_segments}) and num_classes ({self.num_classes}) must be >= 0")


@dataclass(kw_only=True)
class DecoderConfig(TransformerConfig):
    """Decoder-only causal language model (GPT-like).

    Attributes:
        vocab_size: V.
        num_layers: decoder blocks.
        tie_embeddings: output projection shares the token embedding table.
    """

    vocab_size: int
    num_layers: int = 6
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(num_layers=self.num_layers)
        _check_pad(self.pad_id, vocab_size=self.vocab_size)


@dataclass(kw_only=True)
class Seq2SeqConfig(TransformerConfig):
    """Encoder-decoder Transformer (the paper's translation model).

    Attributes:
        src_vocab_size: source vocabulary.
        tgt_vocab_size: target vocabulary; default ``src_vocab_size`` (one shared vocabulary).
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        share_embeddings: source and target use one token table (needs equal vocabularies).
        tie_output: the output projection shares the target token table.
    """

    src_vocab_size: int
    tgt_vocab_size: int | None = None
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    share_embeddings: bool = False
    tie_output: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tgt_vocab_size is None:
            self.tgt_vocab_size = self.src_vocab_size
        _positive(num_encoder_layers=self.num_encoder_layers, num_decoder_layers=self.num_decoder_layers)
        _check_pad(self.pad_id, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size)
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src_vocab_size={self.src_vocab_size}, "
                f"tgt_vocab_size={self.tgt_vocab_size}"
            )


@dataclass(kw_only=True)
class RNNSeq2SeqConfig(_Serializable):
    """RNN encoder-decoder (Bahdanau et al.): bidirectional encoder, attentive (or not) decoder.

    Attributes:
        src_vocab_size: source vocabulary.
        tgt_vocab_size: target vocabulary; default ``src_vocab_size``.
        embed_dim: token embedding size.
        hidden_size: RNN state size (per direction in the encoder).
        num_layers: stacked RNN layers in encoder and decoder.
        cell: "gru" or "lstm".
        attention: additive attention at every step; False = the baseline that only passes the final
            encoder state (fixed context vector).
        attention_dim: hidden size A of the additive attention; default ``hidden_size``.
        dropout: dropout on embeddings and outputs (and between stacked layers).
        pad_id: padding token id.
    """

    src_vocab_size: int
    tgt_vocab_size: int | None = None
    embed_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 1
    cell: str = "gru"
    attention: bool = True
    attention_dim: int | None = None
    dropout: float = 0.1
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.tgt_vocab_size is None:
            self.tgt_vocab_size = self.src_vocab_size
        if self.attention_dim is None:
            self.attention_dim = self.hidden_size
        _positive(embed_dim=self.embed_dim, hidden_size=self.hidden_size, num_layers=self.num_layers,
                  attention_dim=self.attention_dim)
        _check_pad(self.pad_id, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size)
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {self.cell!r}")
        _probability(dropout=self.dropout)
