"""Hugging Face checkpoints in and out of qkv, sentence embeddings, and ONNX / torch.export export."""

from qkv.interop.bart import OffsetLearnedPositional, PretrainedSeq2Seq, SplitSinusoidalPositional
from qkv.interop.embeddings import sentence_embeddings
from qkv.interop.hub import FAMILIES, family_of, from_transformers, load_model, load_pretrained, save_pretrained
from qkv.interop.onnx_export import (
    export_decoder_prefill_onnx,
    export_decoder_step,
    export_decoder_step_onnx,
    export_encoder,
    export_encoder_onnx,
    export_seq2seq_onnx,
)
from qkv.interop.tokenizer import PretrainedTokenizer, TokenBatch

__all__ = [
    "load_pretrained",
    "load_model",
    "from_transformers",
    "save_pretrained",
    "family_of",
    "FAMILIES",
    "sentence_embeddings",
    "PretrainedTokenizer",
    "TokenBatch",
    "PretrainedSeq2Seq",
    "OffsetLearnedPositional",
    "SplitSinusoidalPositional",
    "export_encoder",
    "export_decoder_step",
    "export_encoder_onnx",
    "export_decoder_step_onnx",
    "export_decoder_prefill_onnx",
    "export_seq2seq_onnx",
]
