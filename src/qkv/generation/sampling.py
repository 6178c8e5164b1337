"""Logits processors: pure functions on next-token logits ``(B, V)``.

Notation: B rows being decoded, V vocabulary size.

Each function returns a new tensor and leaves its input alone. Filtering sets excluded tokens to
``-inf`` so that ``softmax`` gives them probability 0 and ``argmax`` never picks them.
:class:`LogitsSettings` validates the knobs once and applies them in the usual order
(repetition penalty, temperature, top-k, top-p).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "LogitsSettings",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "repetition_penalty",
    "suppress_tokens",
    "force_token",
    "check_temperature",
    "check_top_k",
    "check_top_p",
]


def check_temperature(temperature: float) -> None:
    """Raise ValueError unless ``temperature > 0``."""
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def check_top_k(top_k: int | None) -> None:
    """Raise ValueError unless ``top_k`` is None or an int >= 1."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")


def check_top_p(top_p: float | None) -> None:
    """Raise ValueError unless ``top_p`` is None or lies in ``(0, 1]``."""
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``: below 1 sharpens the distribution, above 1 flattens it.

    Args:
        logits: ``(B, V)``.
        temperature: ``> 0``.

    Returns:
        ``(B, V)``.
    """
    check_temperature(temperature)
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits of each row, set the rest to ``-inf``.

    Ties at the k-th value are all kept. ``top_k >= V`` keeps everything.

    Args:
        logits: ``(B, V)``.
        top_k: ``>= 1``.

    Returns:
        ``(B, V)``.
    """
    check_top_k(top_k)
    if top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability mass is ``>= top_p``.

    A token is kept when the mass of the tokens ranked strictly above it is ``< top_p``, so the most
    likely token is always kept and ``top_p = 1`` keeps every token of non-zero probability.

    Args:
        logits: ``(B, V)``.
        top_p: in ``(0, 1]``.

    Returns:
        ``(B, V)``.
    """
    check_top_p(top_p)
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V) mass ranked strictly above each token
    drop_sorted = mass_before >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: make tokens already seen less likely.

    Seen tokens with a positive logit are divided by ``penalty``, negative ones multiplied by it.

    Args:
        logits: ``(B, V)``.
        seen: ``(B, V)`` bool, True where the token occurs in the row's context so far.
        penalty: ``> 0``; 1 is a no-op, > 1 discourages repeats.

    Returns:
        ``(B, V)``.
    """
    if not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty!r}")
    if seen.shape != logits.shape or seen.dtype != torch.bool:
        raise ValueError(f"seen must be bool of shape {tuple(logits.shape)}, got {seen.dtype} {tuple(seen.shape)}")
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def suppress_tokens(logits: torch.Tensor, token_ids: int | list[int]) -> torch.Tensor:
    """Forbid ``token_ids`` in every row (e.g. EOS before the minimum length): ``(B, V) -> (B, V)``."""
    ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
    out = logits.clone()
    out[:, ids] = float("-inf")
    return out


def force_token(logits: torch.Tensor, token_id: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Make ``token_id`` the only possible choice (forced EOS at the last step).

    Args:
        logits: ``(B, V)``.
        token_id: the token to force.
        rows: optional ``(B,)`` bool, which rows to force (default all).

    Returns:
        ``(B, V)``: 0 at ``token_id`` and ``-inf`` elsewhere in forced rows, unchanged elsewhere.
    """
    forced = torch.full_like(logits, float("-inf"))
    forced[:, token_id] = 0.0
    if rows is None:
        return forced
    return torch.where(rows[:, None], forced, logits)


@dataclass(frozen=True)
class LogitsSettings:
    """The knobs that shape the next-token distribution, validated once.

    Attributes:
        temperature: ``> 0`` (used when sampling).
        top_k: keep the k most likely tokens (sampling), or None.
        top_p: nucleus mass in ``(0, 1]`` (sampling), or None.
        repetition_penalty: ``> 0``; 1 disables it (all strategies).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        check_top_k(self.top_k)
        check_top_p(self.top_p)
        if not isinstance(self.repetition_penalty, (int, float)) or not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")

    def penalise(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """Apply the repetition penalty when it is on and ``seen (B, V)`` is given."""
        if seen is None or self.repetition_penalty == 1.0:
            return logits
        return repetition_penalty(logits, seen, self.repetition_penalty)

    def shape(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, then top-k, then top-p: the sampling distribution's logits ``(B, V)``."""
        logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None and self.top_p < 1.0:
            logits = top_p_filter(logits, self.top_p)
        return logits
