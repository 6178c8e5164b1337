"""Copy / reverse / sort tasks and ListOps: correctness against references written here, bounds, seeds."""

import numpy as np
import pytest

from qkv.data.listops import evaluate_listops, generate_listops, listops_splits, listops_tokenizer
from qkv.data.synthetic import SEQUENCE_TASKS, copy_pairs, reverse_pairs, sequence_splits, sort_pairs


@pytest.mark.parametrize("task", sorted(SEQUENCE_TASKS))
def test_sequence_tasks(task):
    pairs = SEQUENCE_TASKS[task](300, seed=1, min_len=3, max_len=9, alphabet="abcde")
    assert pairs == SEQUENCE_TASKS[task](300, seed=1, min_len=3, max_len=9, alphabet="abcde")
    assert pairs != SEQUENCE_TASKS[task](300, seed=2, min_len=3, max_len=9, alphabet="abcde")
    lengths = {len(s) for s, _ in pairs}
    assert lengths == set(range(3, 10))
    for src, tgt in pairs:
        assert set(src) <= set("abcde")
        expected = {"copy": src, "reverse": "".join(reversed(src)), "sort": "".join(sorted(src))}[task]
        assert tgt == expected


def test_sort_uses_alphabet_order_and_bad_args():
    assert all(t == "".join(sorted(s, key="zyx".index)) for s, t in sort_pairs(50, alphabet="zyx"))
    assert {len(s) for s, _ in copy_pairs(20, max_len=1)} == {1}
    with pytest.raises(ValueError, match="min_len=5, max_len=2"):
        reverse_pairs(3, min_len=5, max_len=2)
    splits = sequence_splits("reverse", 200, 50, 50, seed=0, max_len=8)
    sources = [{s for s, _ in splits[k]} for k in ("train", "validation", "test")]
    assert len(set.union(*sources)) == 300
    with pytest.raises(ValueError, match="task must be one of"):
        sequence_splits("shuffle", 1, 1, 1)


@pytest.mark.parametrize(
    "expression, value",
    [
        ("7", 7),
        ("[MIN 4 7 ]", 4),
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),  # the ListOps paper's example
        ("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]", 5),  # the Long Range Arena paper's example
        ("[MED 1 5 3 ]", 3),
        ("[MED 1 2 ]", 1),  # even count: floor of the mean of the middle two, as int(np.median)
        ("[MED 3 8 1 6 ]", 4),
        ("[SM 5 7 9 ]", 1),
        ("[SM [MAX 1 2 ] [MIN 8 9 ] ]", 0),
        ("[MIN [SM 9 9 ] [MED [MAX 0 0 ] 7 ] 5 ]", 3),
    ],
)
def test_evaluator_on_known_expressions(expression, value):
    assert evaluate_listops(expression) == value


@pytest.mark.parametrize(
    "expression, message",
    [
        ("[MAX 1", "1 unclosed operator"),
        ("[MAX ]", "has no arguments"),
        ("1 2", "digit '1' at position 0 is outside any operator"),
        ("[FOO 1 ]", "unknown ListOps token '\\[FOO'"),
        ("] 1", "unbalanced"),
        ("[MAX 1 ] 2", "extra token '2' at position 3"),
        ("", "empty"),
    ],
)
def test_evaluator_rejects_malformed(expression, message):
    with pytest.raises(ValueError, match=message):
        evaluate_listops(expression)


def reference(expression: str, max_args: int) -> tuple[int, int]:
    """Value (LRA definitions, numpy median) and nesting depth, by recursive descent."""
    tokens = expression.split()
    pos = 0

    def node(depth):
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok), depth - 1
        args, deepest = [], depth
        while tokens[pos] != "]":
            v, d = node(depth + 1)
            args.append(v)
            deepest = max(deepest, d)
        pos += 1
        assert 2 <= len(args) <= max_args, expression
        ops = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}
        return ops[tok](args), deepest

    value, depth = node(1)
    assert pos == len(tokens)
    return value, depth


def test_generated_expressions_match_reference_and_bounds():
    examples = generate_listops(200, seed=3, min_length=10, max_length=120, max_depth=4, max_args=5)
    assert examples == generate_listops(200, seed=3, min_length=10, max_length=120, max_depth=4, max_args=5)
    assert examples != generate_listops(200, seed=4, min_length=10, max_length=120, max_depth=4, max_args=5)
    depths = set()
    for expression, value in examples:
        assert 10 <= len(expression.split()) <= 120
        ref_value, depth = reference(expression, max_args=5)
        assert value == ref_value and 0 <= value <= 9
        assert 1 <= depth <= 4
        depths.add(depth)
    assert len(depths) >= 3  # nesting really varies
    assert len({v for _, v in examples}) == 10  # every class occurs


def test_lra_sized_expressions():
    examples = generate_listops(3, seed=0, min_length=500, max_length=2000)
    assert all(500 <= len(e.split()) <= 2000 for e, _ in examples)


def test_tokenizer_and_splits():
    tok = listops_tokenizer()
    assert tok.vocab_size == 4 + 15
    for expression, _ in generate_listops(20, seed=0, max_length=60, max_depth=3):
        ids = tok.encode(expression)
        assert tok.unk_id not in ids and tok.decode(ids) == expression
    splits = listops_splits(100, 20, 20, seed=1, max_length=40, max_depth=3)
    sets = [{e for e, _ in splits[k]} for k in ("train", "validation", "test")]
    assert [len(s) for s in sets] == [100, 20, 20] and len(set.union(*sets)) == 140


def test_impossible_bounds():
    with pytest.raises(ValueError, match=r"no ListOps expression of 500..600 tokens"):
        generate_listops(1, min_length=500, max_length=600, max_depth=1, max_args=3, max_tries=50)
    with pytest.raises(ValueError, match="max_args >= 2"):
        generate_listops(1, max_args=1)
