"""Shared checks and file writing for qkv.viz: weights to numpy, token labels, atomic writes.

Notation: B batch, H heads, L query length, S key length.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SHOWN = {" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5", "\r": "\u240d"}


def to_numpy(weights: Any, name: str = "weights", *, ndims: Sequence[int] = (2, 4)) -> np.ndarray:
    """A tensor or array of attention weights as a finite float64 numpy array of an allowed rank.

    Args:
        weights: ``torch.Tensor``, numpy array or nested lists.
        name: argument name for error messages.
        ndims: allowed numbers of dimensions.

    Returns:
        The weights as ``np.ndarray`` (float64).

    Raises:
        ValueError: on a wrong rank, an empty dimension or a non-finite value; the message names
            ``name`` and the shape.
    """
    if hasattr(weights, "detach"):
        weights = weights.detach().to("cpu").double().numpy()
    array = np.asarray(weights, dtype=np.float64)
    if array.ndim not in ndims or 0 in array.shape:
        layouts = {2: "(L, S)", 3: "(H, L, S)", 4: "(B, H, L, S)"}
        allowed = " or ".join(layouts[n] for n in ndims)
        raise ValueError(f"{name} must have shape {allowed} with no empty dimension, got {tuple(array.shape)}")
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} of shape {tuple(array.shape)} has {int(bad.sum())} non-finite values, "
            f"e.g. {array[where]} at {where}"
        )
    return array


def check_tokens(tokens: Sequence[str], size: int, name: str, dim: str, shape: tuple[int, ...]) -> list[str]:
    """Checks that there is one string label per row or column.

    Args:
        tokens: the labels.
        size: the length the labels must have.
        name: argument name for error messages (``"query_tokens"``).
        dim: the dimension's letter (``"L"`` or ``"S"``).
        shape: the weights' shape, for the message.

    Returns:
        The labels as a list.

    Raises:
        ValueError: on a wrong count or a non-string label.
    """
    if isinstance(tokens, str):
        tokens = list(tokens)  # a string of characters: one label per character
    tokens = list(tokens)
    if len(tokens) != size:
        raise ValueError(f"{name} has {len(tokens)} labels but weights of shape {shape} have {dim}={size}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise ValueError(f"{name}[{i}] must be a str, got {type(t).__name__} {t!r}")
    return tokens


def display_token(token: str) -> str:
    """A visible label for a token: space as ``␣``, newline as ``⏎``, tab as ``⇥``, empty as ``∅``."""
    return "".join(_SHOWN.get(c, c) for c in token) or "\u2205"


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Writes a file through a temp file in the same folder and ``os.replace``: readers never see half a file.

    The file gets the usual permissions of a new file (``0o666`` less the umask), not the temp file's ``0o600``.

    Args:
        path: destination; parent folders are created.
        write: ``write(binary_file)`` fills the temp file.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Saves a matplotlib figure as PNG atomically; the image is ``figsize * dpi`` pixels.

    Args:
        fig: the figure (from any function of :mod:`qkv.viz`).
        path: output ``.png`` path; parent folders are created.
        dpi: dots per inch.

    Returns:
        The path written.
    """
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib ``Figure`` on an Agg canvas, made without pyplot (no global state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
