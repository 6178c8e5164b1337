"""Whole networks built from :mod:`qkv.modules`: encoder-only, decoder-only, encoder-decoder, RNN seq2seq."""

from qkv.models import registry
from qkv.models.config import DecoderConfig, EncoderConfig, RNNSeq2SeqConfig, Seq2SeqConfig, TransformerConfig
from qkv.models.decoder import DecoderModel
from qkv.models.encoder import EncoderModel
from qkv.models.registry import build
from qkv.models.rnn_seq2seq import RNNSeq2Seq, RNNState
from qkv.models.seq2seq import EncoderDecoderModel

__all__ = [
    "TransformerConfig",
    "EncoderConfig",
    "DecoderConfig",
    "Seq2SeqConfig",
    "RNNSeq2SeqConfig",
    "EncoderModel",
    "DecoderModel",
    "EncoderDecoderModel",
    "RNNSeq2Seq",
    "RNNState",
    "registry",
    "build",
]
