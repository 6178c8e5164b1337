"""Decoding outside the models: logits processors, greedy / sampling / beam search, streaming.

``generate`` continues prompts with a ``DecoderModel``; ``translate`` decodes an ``EncoderDecoderModel``
or an ``RNNSeq2Seq``. Both drive the model through the step protocol of :mod:`qkv.generation.steps`.
Past a decoder's context, greedy and sampled generation slide a window (:mod:`qkv.generation.window`);
:class:`IncrementalText` turns streamed tokens into text deltas.

Example::

    new = generate(lm, ids, max_new_tokens=100, strategy="sample", top_p=0.9, temperature=0.8, seed=0,
                   eos_id=eos)                                      # (B, T') new tokens, pad after EOS
    text = IncrementalText(tokenizer)
    for st in stream_generate(lm, ids, max_new_tokens=100, eos_id=eos):  # st.step, st.rows, st.tokens (one row)
        print(text.push(int(st.tokens[0])), end="", flush=True)
    print(text.finish())
    hyp = translate(mt, src, max_len=40, strategy="beam", num_beams=4, bos_id=bos, eos_id=eos, pad_id=pad)
"""

from qkv.generation.api import STRATEGIES, generate, stream_generate, stream_translate, translate
from qkv.generation.decode import StepTokens, beam_search, decode_tokens, gnmt_length_penalty, iter_tokens
from qkv.generation.prepare import DecodingWeights, prepare_for_decoding
from qkv.generation.sampling import (
    LogitsSettings,
    apply_temperature,
    force_token,
    repetition_penalty,
    suppress_tokens,
    top_k_filter,
    top_p_filter,
)
from qkv.generation.steps import (
    DecoderStepper,
    EncoderDecoderStepper,
    LayerState,
    RNNStepper,
    Stepper,
    context_length,
    select_state,
)
from qkv.generation.text import IncrementalText
from qkv.generation.window import sliding_steps, window_start

__all__ = [
    "generate",
    "translate",
    "stream_generate",
    "stream_translate",
    "STRATEGIES",
    "prepare_for_decoding",
    "DecodingWeights",
    "StepTokens",
    "iter_tokens",
    "decode_tokens",
    "beam_search",
    "gnmt_length_penalty",
    "LogitsSettings",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "repetition_penalty",
    "suppress_tokens",
    "force_token",
    "Stepper",
    "LayerState",
    "select_state",
    "context_length",
    "DecoderStepper",
    "EncoderDecoderStepper",
    "RNNStepper",
    "window_start",
    "sliding_steps",
    "IncrementalText",
]
