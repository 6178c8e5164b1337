"""ListOps (Nangia & Bowman 2018; the Long Range Arena's long-sequence version), generated from a seed.

An expression nests four operators over the digits 0-9::

    [MAX 2 9 [MIN 4 7 ] 0 ]   ->  9

``[MAX`` / ``[MIN`` take the maximum / minimum of their arguments, ``[MED`` the median (rounded down
for an even count, as LRA's ``int(np.median(...))``), and ``[SM`` the sum modulo 10. Tokens are
separated by single spaces, so :func:`listops_tokenizer` (a word tokenizer with a fixed 15-symbol
vocabulary) encodes them; the label is the value, a class 0-9.

Generation follows LRA: below ``max_depth``, a node is an operator with probability ``op_p``
(LRA: 0.25) with 2..``max_args`` arguments, otherwise a digit. The root is always an operator, and
expressions are redrawn until their token count lies in ``[min_length, max_length]``.
"""

from __future__ import annotations

import random

from qkv.data.tokenizers import WordTokenizer

__all__ = ["OPERATORS", "evaluate_listops", "generate_listops", "listops_tokenizer", "listops_splits"]

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
_DIGITS = tuple(str(i) for i in range(10))
_CLOSE = "]"


def _apply(op: str, args: list[int]) -> int:
    if not args:
        raise ValueError(f"ListOps operator {op} has no arguments")
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}; expected one of {OPERATORS}")


def evaluate_listops(expression: str) -> int:
    """Value (0-9) of a ListOps expression such as ``"[SM 3 [MAX 4 8 ] 1 ]"``.

    Raises:
        ValueError: malformed expression (unknown token, unbalanced brackets, empty operator).
    """
    tokens = expression.split()
    if not tokens:
        raise ValueError("empty ListOps expression")
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for pos, tok in enumerate(tokens):
        if result is not None:
            raise ValueError(f"extra token {tok!r} at position {pos} after the expression ended")
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == _CLOSE:
            if not stack:
                raise ValueError(f"unbalanced ']' at position {pos} in {expression[:80]!r}")
            op, args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif tok in _DIGITS:
            if not stack:
                if len(tokens) == 1:
                    return int(tok)
                raise ValueError(f"digit {tok!r} at position {pos} is outside any operator")
            stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"unknown ListOps token {tok!r} at position {pos}")
    if stack or result is None:
        raise ValueError(f"{len(stack)} unclosed operator(s) in {expression[:80]!r}")
    return result


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, op_p: float, out: list[str], limit: int):
    """Append one random subtree's tokens to ``out``; abort once ``out`` passes ``limit`` tokens."""
    if depth > 0 and (depth >= max_depth or rng.random() >= op_p):
        out.append(rng.choice(_DIGITS))
    else:
        out.append(rng.choice(OPERATORS))
        for _ in range(rng.randint(2, max_args)):
            _tree(rng, depth + 1, max_depth, max_args, op_p, out, limit)
        out.append(_CLOSE)
    if len(out) > limit:
        raise _TooLong


def generate_listops(
    n: int,
    *,
    seed: int = 0,
    min_length: int = 1,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    op_p: float = 0.25,
    max_tries: int = 1000,
) -> list[tuple[str, int]]:
    """``n`` random ``(expression, value)`` pairs, deterministic from ``seed``.

    Args:
        n: number of examples.
        seed: random seed.
        min_length, max_length: bounds on the token count of each expression (LRA: 500, 2000).
        max_depth: deepest operator nesting (the root is depth 1).
        max_args: most arguments of one operator (at least 2).
        op_p: chance that a node below the root is an operator rather than a digit.
        max_tries: draws allowed per example before giving up.

    Raises:
        ValueError: bad arguments, or no expression within the length bounds after ``max_tries`` draws.
    """
    if max_args < 2 or max_depth < 1 or not 0.0 <= op_p <= 1.0:
        raise ValueError(f"need max_args >= 2, max_depth >= 1, 0 <= op_p <= 1; got {max_args=}, {max_depth=}, {op_p=}")
    if max_length < 4 or min_length > max_length:
        raise ValueError(f"need 4 <= max_length and min_length <= max_length, got {min_length=}, {max_length=}")
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for _ in range(n):
        for _ in range(max_tries):
            tokens: list[str] = []
            try:
                _tree(rng, 0, max_depth, max_args, op_p, tokens, max_length)
            except _TooLong:
                continue
            if len(tokens) >= min_length:
                expr = " ".join(tokens)
                out.append((expr, evaluate_listops(expr)))
                break
        else:
            raise ValueError(
                f"no ListOps expression of {min_length}..{max_length} tokens in {max_tries} draws "
                f"(max_depth={max_depth}, max_args={max_args}, op_p={op_p}); widen the bounds"
            )
    return out


def listops_tokenizer() -> WordTokenizer:
    """Word tokenizer over the 15 ListOps symbols (digits, operators, ``]``)."""
    return WordTokenizer(list(_DIGITS) + list(OPERATORS) + [_CLOSE])


def listops_splits(
    n_train: int, n_val: int, n_test: int, *, seed: int = 0, **kwargs
) -> dict[str, list[tuple[str, int]]]:
    """Train/validation/test ListOps sets with no expression in two sets (``kwargs`` as in
    :func:`generate_listops`)."""
    want = n_train + n_val + n_test
    seen: dict[str, int] = {}
    round_seed = seed
    while len(seen) < want:
        for expr, value in generate_listops(want - len(seen), seed=round_seed, **kwargs):
            seen.setdefault(expr, value)
        round_seed += 1_000_003
        if round_seed - seed > 50 * 1_000_003:
            raise ValueError(f"only {len(seen)} distinct expressions found, {want} wanted; widen the bounds")
    items = list(seen.items())
    return {
        "train": items[:n_train],
        "validation": items[n_train : n_train + n_val],
        "test": items[n_train + n_val : want],
    }
