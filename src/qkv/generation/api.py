"""Public entry points: ``generate`` for language models, ``translate`` for encoder-decoders.

Notation: B rows, P prompt length, S source length, T new tokens.

Both validate their input up front (a ValueError names the argument and its value), build a
:mod:`~qkv.generation.steps` adapter for the model, and run one engine of
:mod:`~qkv.generation.decode`: ``strategy="greedy"``, ``"sample"`` or ``"beam"``. ``stream_generate`` and
``stream_translate`` yield :class:`~qkv.generation.decode.StepTokens` as tokens are chosen (for the CLI).

Past a decoder's context, greedy and sampled ``generate`` and ``stream_generate`` go on by one policy, the
sliding window of :mod:`~qkv.generation.window` (``qkv generate`` calls ``generate``, so it does the same):
the model sees at most its context ``C``; a full window drops to its last ``C // 2`` tokens, read again. Beam
search compares whole hypotheses and does not slide: a beam request that passes the context is a ValueError.

Decoding runs under ``torch.inference_mode()`` and, for one call (a stream: until it ends or is closed),
:func:`~qkv.generation.prepare.prepare_for_decoding` (weight copies for few-row products, made and dropped
within the call); results are cloned back to normal tensors. ``on_token`` callbacks see inference tensors
(clone them to keep them for autograd). Put the model in ``eval()`` mode first: dropout is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from qkv.generation.decode import StepTokens, beam_search, decode_tokens, iter_tokens
from qkv.generation.prepare import prepare_for_decoding
from qkv.generation.sampling import LogitsSettings
from qkv.generation.steps import DecoderStepper, EncoderDecoderStepper, RNNStepper, Stepper, context_length
from qkv.generation.window import sliding_steps

__all__ = ["generate", "translate", "stream_generate", "stream_translate", "STRATEGIES"]

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class _Options:
    """Decoding options shared by every entry point, validated once."""

    strategy: str
    settings: LogitsSettings
    eos_id: int | None
    pad_id: int
    min_new_tokens: int
    force_eos: bool
    num_beams: int
    length_penalty: float
    early_stopping: bool
    generator: torch.Generator | None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ValueError(f"num_beams must be an int >= 1, got {self.num_beams!r}")
        if not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be an int >= 0, got {self.min_new_tokens!r}")


def _options(strategy, eos_id, pad_id, temperature, top_k, top_p, repetition_penalty, min_new_tokens,
             force_eos, num_beams, length_penalty, early_stopping, generator, seed, device) -> _Options:
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    settings = LogitsSettings(temperature, top_k, top_p, repetition_penalty)
    return _Options(strategy, settings, eos_id, pad_id, min_new_tokens, force_eos, num_beams,
                    length_penalty, early_stopping, generator)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _check_ids(name: str, ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"{name} must be an integer tensor (B, L), got {getattr(ids, 'dtype', type(ids))}")
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (B, L) or (L,), got {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(ids.shape)}; give at least one token per row")
    return ids.long()


def _check_mask(name: str, mask: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask.unsqueeze(0) if mask.dim() == 1 else mask
    if mask.dtype != torch.bool or mask.shape != ids.shape:
        raise ValueError(f"{name} must be bool {tuple(ids.shape)} (True = real token), got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    empty = (~mask.any(1)).nonzero().squeeze(1)
    if empty.numel():
        raise ValueError(f"{name} leaves rows {empty.tolist()} with no real token (empty input)")
    return mask


def _beam(stepper: Stepper, opts: _Options, T: int, prefix, prefix_mask, on_token) -> torch.Tensor:
    tokens, _ = beam_search(
        stepper, num_beams=opts.num_beams, max_new_tokens=T, eos_id=opts.eos_id,
        length_penalty=opts.length_penalty, early_stopping=opts.early_stopping,
        min_new_tokens=opts.min_new_tokens, settings=opts.settings, prefix=prefix,
        prefix_mask=prefix_mask, pad_id=opts.pad_id,
    )
    if on_token is not None:  # beam search knows its answer only at the end
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        for t in range(tokens.shape[1]):
            on_token(StepTokens(t, rows, tokens[:, t]))
    return tokens


def _steps(stepper: Stepper, opts: _Options, T: int, prefix=None, prefix_mask=None, done: int = 0,
           last: bool = True) -> Iterator[StepTokens]:
    """Greedy or sampled decoding of ``T`` tokens after ``done`` earlier ones (``min_new_tokens`` counts from
    the first); ``last``: these end the call (``force_eos`` applies to their last step)."""
    return iter_tokens(
        stepper, max_new_tokens=T, sample=opts.strategy == "sample", settings=opts.settings,
        eos_id=opts.eos_id, min_new_tokens=max(0, opts.min_new_tokens - done), force_eos=opts.force_eos and last,
        generator=opts.generator, prefix=prefix, prefix_mask=prefix_mask,
    )


def _decoder_input(model, input_ids, key_padding, max_new_tokens, opts) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated ``ids (B, P)`` and ``key_padding``; beam search must fit the context (it does not slide)."""
    if hasattr(model, "decode") or hasattr(model, "decode_step"):
        raise ValueError(f"model is an encoder-decoder ({type(model).__name__}); use translate(model, src, ...)")
    ids = _check_ids("input_ids", input_ids)
    key_padding = _check_mask("key_padding", key_padding, ids)
    _check_count("max_new_tokens", max_new_tokens)
    ctx, P = context_length(model), ids.shape[1]
    if opts.strategy == "beam" and ctx is not None:
        if P > ctx:
            raise ValueError(f"input_ids has {P} tokens, longer than the model's context ({ctx}); beam search "
                             "does not slide its window: shorten the prompt or use greedy/sample")
        if P + max_new_tokens - 1 > ctx:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) after a prompt of {P} tokens passes the model's "
                             f"context ({ctx}); beam search does not slide its window: ask at most "
                             f"{ctx - P + 1}, or use greedy/sample")
    return ids, key_padding


def _beam_stepper(model, ids, key_padding, T: int, opts: _Options, use_cache: bool) -> DecoderStepper:
    return DecoderStepper(model, ids, key_padding=key_padding, max_new_tokens=T, rows=ids.shape[0] * opts.num_beams,
                          use_cache=use_cache)


def _decoder_steps(model, ids, key_padding, T: int, opts: _Options, use_cache: bool) -> Iterator[StepTokens]:
    """Greedy or sampled decoding, past the context by the sliding window (:mod:`~qkv.generation.window`)."""
    def chunk(stepper, n, prefix, prefix_mask, done):
        return _steps(stepper, opts, n, prefix, prefix_mask, done, last=done + n == T)

    return sliding_steps(model, ids, key_padding, max_new_tokens=T, chunk=chunk, eos_id=opts.eos_id,
                         pad_id=opts.pad_id, use_cache=use_cache)


def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    strategy: str = "greedy",
    key_padding: torch.Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    force_eos: bool = False,
    num_beams: int = 4,
    length_penalty: float = 0.6,
    early_stopping: bool = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    on_token: Callable[[StepTokens], None] | None = None,
) -> torch.Tensor:
    """Continue prompts with a ``DecoderModel``.

    Args:
        model: ``forward(ids, *, key_padding, positions, cache)``, ``new_cache(batch, max_len)``.
        input_ids: prompts ``(B, P)`` (or ``(P,)``), left-padded when their lengths differ. A prompt
            longer than the model's context ``C`` starts from its last ``C // 2`` tokens (greedy / sample).
        max_new_tokens: ``T >= 0``. Greedy and sampling go on past the context by the sliding window
            (:mod:`~qkv.generation.window`: the model sees at most ``C`` tokens of a row; a full window drops
            to the last ``C // 2``, read again); beam search must fit: ``P + T - 1 <= C``.
        strategy: ``"greedy"``, ``"sample"`` or ``"beam"``.
        key_padding: ``(B, P)`` bool, True = real token (needed with left padding).
        eos_id: a row that emits it is finished (then padded with ``pad_id``).
        pad_id: fills rows after they finish.
        temperature, top_k, top_p: shape the sampling distribution (``strategy="sample"``).
        repetition_penalty: CTRL penalty on tokens already in the row (1 = off).
        min_new_tokens: no EOS before this many new tokens.
        force_eos: end rows that reach ``max_new_tokens`` with EOS (greedy / sample).
        num_beams, length_penalty, early_stopping: beam search width, GNMT alpha, stop rule.
        generator, seed: the random source for sampling (``seed`` builds a seeded generator).
        use_cache: False recomputes the whole prefix each step (slow reference path).
        on_token: called with each :class:`StepTokens` as it is chosen.

    Returns:
        New tokens ``(B, T')``, ``T' <= T`` (``(T',)`` for a 1-D prompt), EOS kept, padded after it
        (``T' < T`` only when every row emitted EOS, or beam search chose shorter hypotheses).

    Raises:
        ValueError: bad input, named; ``strategy="beam"`` with a prompt or ``max_new_tokens`` past the context.
    """
    opts = _options(strategy, eos_id, pad_id, temperature, top_k, top_p, repetition_penalty, min_new_tokens,
                    force_eos, num_beams, length_penalty, early_stopping, generator, seed, input_ids.device)
    with torch.inference_mode(), prepare_for_decoding(model):
        ids, kp = _decoder_input(model, input_ids, key_padding, max_new_tokens, opts)
        T = max_new_tokens
        if opts.strategy == "beam":
            out = _beam(_beam_stepper(model, ids, kp, T, opts, use_cache), opts, T, ids, kp, on_token)
        else:
            steps = _decoder_steps(model, ids, kp, T, opts, use_cache)
            out = decode_tokens(steps, ids.shape[0], T, pad_id=opts.pad_id, on_token=on_token, device=ids.device)
    out = out.clone()  # a normal tensor again: inference tensors cannot enter autograd later
    return out[0] if input_ids.dim() == 1 else out


def stream_generate(
    model: nn.Module, input_ids: torch.Tensor, *, max_new_tokens: int, **kwargs
) -> Iterator[StepTokens]:
    """Like :func:`generate` (greedy or sample), yielding each step's tokens as soon as they are chosen.

    The steps are exactly those :func:`generate` collects, past the context too (the same sliding window):
    ``step`` counts from the first new token, ``rows`` index ``input_ids``.
    """
    kwargs.pop("on_token", None)
    use_cache = kwargs.pop("use_cache", True)
    key_padding = kwargs.pop("key_padding", None)
    opts = _options(**_option_kwargs(kwargs), device=input_ids.device)
    if opts.strategy == "beam":
        raise ValueError("strategy 'beam' cannot stream (its answer is known only at the end); use generate")
    with prepare_for_decoding(model):  # the copies live until the stream ends or is closed
        with torch.inference_mode():
            ids, kp = _decoder_input(model, input_ids, key_padding, max_new_tokens, opts)
        yield from _stream(_decoder_steps(model, ids, kp, max_new_tokens, opts, use_cache))


def _stream(steps: Iterator[StepTokens]) -> Iterator[StepTokens]:
    """Advance ``steps`` under inference mode; yield normal-tensor copies (the caller may be outside it)."""
    while True:
        with torch.inference_mode():
            st = next(steps, None)
        if st is None:
            return
        yield StepTokens(st.step, st.rows.clone(), st.tokens.clone())


def _option_kwargs(kw: dict) -> dict:
    names = ("strategy", "eos_id", "pad_id", "temperature", "top_k", "top_p", "repetition_penalty",
             "min_new_tokens", "force_eos", "num_beams", "length_penalty", "early_stopping", "generator", "seed")
    defaults = ("greedy", None, 0, 1.0, None, None, 1.0, 0, False, 4, 0.6, False, None, None)
    unknown = set(kw) - set(names)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {list(names)}")
    return {n: kw.get(n, d) for n, d in zip(names, defaults, strict=True)}


def _config_id(model: nn.Module, name: str, given: int | None) -> int | None:
    if given is not None:
        return given
    cfg = getattr(model, "config", None)
    value = getattr(cfg, name, None) if cfg is not None else None
    return value if isinstance(value, int) else getattr(model, name, None)


def _seq2seq_session(model, src, src_mask, max_len, opts, bos_id, pad_id, use_cache):
    src = _check_ids("src", src)
    _check_count("max_len", max_len)
    bos_id = _config_id(model, "bos_id", bos_id)
    if bos_id is None:
        raise ValueError("bos_id is None and the model's config has none; pass bos_id=")
    if src_mask is None and pad_id is not None:
        src_mask = src != pad_id
    src_mask = _check_mask("src_mask", src_mask, src)
    if hasattr(model, "decode_step"):
        return src, max_len, RNNStepper(model, src, src_mask, bos_id=bos_id)
    ctx = context_length(model)
    if ctx is not None and src.shape[1] > ctx:
        raise ValueError(f"src has {src.shape[1]} tokens, longer than the model's context ({ctx})")
    T = max_len if ctx is None else min(max_len, ctx)
    rows = src.shape[0] * (opts.num_beams if opts.strategy == "beam" else 1)
    return src, T, EncoderDecoderStepper(model, src, src_mask, bos_id=bos_id, max_len=T, rows=rows,
                                         use_cache=use_cache)


def translate(
    model: nn.Module,
    src: torch.Tensor,
    src_mask: torch.Tensor | None = None,
    *,
    max_len: int,
    strategy: str = "greedy",
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    use_cache: bool = True,
    on_token: Callable[[StepTokens], None] | None = None,
    **options,
) -> torch.Tensor:
    """Translate sources with an ``EncoderDecoderModel`` or an ``RNNSeq2Seq``.

    Args:
        model: ``encode``/``decode``/``new_cache`` (Transformer) or ``encode``/``decode_step`` (RNN).
        src: ``(B, S)`` (or ``(S,)``) source ids.
        src_mask: ``(B, S)`` bool, True = real token; default ``src != pad_id`` (all real without pad_id).
        max_len: the most target tokens to produce (EOS included).
        strategy: ``"greedy"``, ``"sample"`` or ``"beam"``.
        bos_id, eos_id, pad_id: special tokens; default to the model config's ``bos_id/eos_id/pad_id``.
        use_cache: False re-decodes the target prefix at every step (reference path).
        on_token: called with each :class:`StepTokens` as it is chosen.
        **options: as for :func:`generate` (temperature, top_k, top_p, num_beams, length_penalty, ...).

    Returns:
        Target ids ``(B, T')`` without BOS, EOS kept, ``pad_id`` after it (``(T',)`` for a 1-D source).
    """
    eos_id, pad_id = _config_id(model, "eos_id", eos_id), _config_id(model, "pad_id", pad_id)
    kw = _option_kwargs({**options, "strategy": strategy, "eos_id": eos_id, "pad_id": pad_id})
    kw["pad_id"] = 0 if pad_id is None else pad_id
    opts = _options(**kw, device=src.device)
    with torch.inference_mode(), prepare_for_decoding(model):
        ids, T, stepper = _seq2seq_session(model, src, src_mask, max_len, opts, bos_id, pad_id, use_cache)
        if opts.strategy == "beam":
            out = _beam(stepper, opts, T, None, None, on_token)
        else:
            out = decode_tokens(_steps(stepper, opts, T), ids.shape[0], T, pad_id=opts.pad_id, on_token=on_token,
                                device=ids.device)
    out = out.clone()  # a normal tensor again
    return out[0] if src.dim() == 1 else out


def stream_translate(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *,
                     max_len: int, bos_id: int | None = None, use_cache: bool = True,
                     **options) -> Iterator[StepTokens]:
    """Like :func:`translate` (greedy or sample), yielding each step's tokens as they are chosen."""
    kw = _option_kwargs(options)
    kw["eos_id"] = _config_id(model, "eos_id", kw["eos_id"])
    pad_id = _config_id(model, "pad_id", options.get("pad_id"))
    kw["pad_id"] = 0 if pad_id is None else pad_id
    opts = _options(**kw, device=src.device)
    if opts.strategy == "beam":
        raise ValueError("strategy 'beam' cannot stream (its answer is known only at the end); use translate")
    with prepare_for_decoding(model):  # the copies live until the stream ends or is closed
        with torch.inference_mode():
            _, T, stepper = _seq2seq_session(model, src, src_mask, max_len, opts, bos_id, pad_id, use_cache)
        yield from _stream(_steps(stepper, opts, T))
