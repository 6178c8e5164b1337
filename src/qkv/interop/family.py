"""What a supported Hugging Face model family tells the loader and the saver.

Each family module (:mod:`~qkv.interop.bert`, :mod:`~qkv.interop.gpt2`, :mod:`~qkv.interop.bart`)
defines one :class:`Family`; :mod:`qkv.interop.hub` dispatches on ``config.json``'s ``model_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from qkv.interop.checkpoint import Link

__all__ = ["Family", "get", "activation_from_hf", "activation_to_hf", "require"]

# Hugging Face activation names -> qkv's FeedForward names (exact "gelu" is erf, "gelu_new" is tanh).
_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
            "silu": "silu", "swish": "silu"}
_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


@dataclass(frozen=True)
class Family:
    """One Hugging Face architecture family and its conversion to and from qkv.

    Attributes:
        model_type: ``config.json``'s ``model_type`` ("bert", "gpt2", ...).
        build: HF config dict -> a freshly initialised qkv model of the same shape.
        links: qkv model -> its tensor map (:class:`~qkv.interop.checkpoint.Link` per qkv tensor).
        hf_config: qkv model -> the ``config.json`` dict that ``transformers`` reads back.
        matches: whether a qkv model saves as this family.
        prefixes: prefixes stripped from checkpoint names on load ("bert.", "transformer.", "model.").
        ignored: regexes of checkpoint tensors qkv does not use (pooler, tied copies, buffers).
        save_prefix: prefix put back on save (the ``*ForConditionalGeneration`` / ``*LMHeadModel`` layout).
        top_level: tensors that live outside the prefix (``final_logits_bias``).
        optional: tensors a checkpoint may lack (a ``BartModel`` has no ``final_logits_bias``); the
            model keeps its initial values (zeros) for them.
    """

    model_type: str
    build: Callable[[Mapping[str, Any]], nn.Module]
    links: Callable[[nn.Module], list[Link]]
    hf_config: Callable[[nn.Module], dict[str, Any]]
    matches: Callable[[nn.Module], bool]
    prefixes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    save_prefix: str = ""
    top_level: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


def get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]``, or ``default`` when absent or null (HF writes null for "use the default")."""
    value = config.get(key)
    return default if value is None else value


def activation_from_hf(name: str, *, field: str) -> str:
    """A Hugging Face activation name as qkv's FeedForward name; ValueError lists the supported ones."""
    if name not in _FROM_HF:
        raise ValueError(f"unsupported {field}={name!r}; supported: {sorted(_FROM_HF)}")
    return _FROM_HF[name]


def activation_to_hf(name: str) -> str:
    """qkv's activation name as Hugging Face's."""
    if name not in _TO_HF:
        raise ValueError(f"activation {name!r} has no Hugging Face equivalent here; supported: {sorted(_TO_HF)}")
    return _TO_HF[name]


def require(what: str, checks: Mapping[str, tuple[Any, Any]]) -> None:
    """Raise ValueError listing every ``name: (got, want)`` pair where got != want.

    Args:
        what: the context ("config.json of a bert checkpoint", "a gpt2 save").
        checks: name -> (value found, value needed).
    """
    bad = [f"{name}={got!r} (needs {want!r})" for name, (got, want) in checks.items() if got != want]
    if bad:
        raise ValueError(f"{what} is not supported: " + ", ".join(bad))
