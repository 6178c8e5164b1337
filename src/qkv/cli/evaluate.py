"""``qkv evaluate`` per task: translation (BLEU, chrF, exact match, by length), lm (perplexity), classify.

Without data arguments a run is evaluated on its own test split, rebuilt from the ``recipe.json`` it was
trained with (generated dates and sequences from their seed, ``data.test`` files, an LM's held-out tail).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch

from qkv.cli.errors import UsageError
from qkv.cli.progress import bar, in_chunks, wrote


def _recipe(run, what: str):
    from qkv.recipes.run import run_recipe

    recipe = run_recipe(run)
    if recipe is None:
        raise UsageError(f"{run.path} has no recipe.json to find its test split in (trained from Python?); give {what}")
    return recipe


def check_limit(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1 (the first N examples), got {args.limit}")


def _say(text: str) -> None:
    print(f"qkv evaluate: {text}", file=sys.stderr)


def quantile_edges(lengths: Sequence[int], buckets: int) -> list[int]:
    """Inclusive upper bounds of up to ``buckets`` source-length buckets holding about as many sentences
    each (quantiles of ``lengths``); ties can merge buckets."""
    if buckets < 1:
        raise UsageError(f"--buckets must be >= 1, got {buckets}")
    ordered = sorted(lengths)
    cuts = {ordered[min(len(ordered) - 1, (k * len(ordered)) // buckets)] for k in range(1, buckets)}
    edges = sorted(c for c in cuts if c < ordered[-1]) if ordered else []
    return edges or [ordered[-1] if ordered else 0]


def _sources(run, args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    from qkv.data import read_aligned
    from qkv.recipes.translation import test_pairs

    if args.src or args.ref:
        if not (args.src and args.ref):
            raise UsageError("give both --src and --ref (or neither, for the run's own test split)")
        src, ref = read_aligned(args.src, args.ref)
        return src, ref, args.src
    pairs, what = test_pairs(_recipe(run, "--src and --ref"))
    _say(f"the run's test split: {what}")
    return [s for s, _ in pairs], [t for _, t in pairs], "the test split"


def translation(run, args: argparse.Namespace) -> int:
    from qkv.cli.commands import _decode
    from qkv.evaluation import (
        bleu_by_length,
        corpus_bleu,
        corpus_chrf,
        exact_match,
        format_length_table,
        plot_bleu_by_length,
        source_length,
        tokenized_bleu,
    )
    from qkv.recipes.config import InputTooLong
    from qkv.recipes.translation import translate_texts

    src, ref, name = _sources(run, args)
    if args.limit is not None:
        src, ref = src[: args.limit], ref[: args.limit]
    dec = _decode(run, args)
    done = [0]  # sentences translated before this chunk, so that an error names the right line

    def chunk(part: Sequence[str]) -> list[str]:
        try:
            out = translate_texts(run.model, run.tokenizer, part, dec)
        except InputTooLong as e:
            raise UsageError(f"{name} line {done[0] + e.index + 1} has {e.length} tokens; this model reads at most "
                             f"{e.limit}") from e
        done[0] += len(part)
        return out

    hyps = in_chunks(chunk, src, "sentence")
    if args.output:
        from qkv.cli.commands import _output

        with _output(args.output) as out:
            out.writelines(h + "\n" for h in hyps)
        wrote("evaluate", f"{len(hyps):,} translations", args.output)
    bleu, chrf = corpus_bleu(hyps, ref), corpus_chrf(hyps, ref)
    print(f"BLEU  {bleu.score:6.2f}  {bleu.signature}")
    print(f"chrF  {chrf.score:6.2f}  {chrf.signature}")
    print(f"BLEU (tokenised, lowercased) {tokenized_bleu(hyps, ref).score:6.2f}")
    print(f"exact match {exact_match(hyps, ref):.4f}  ({len(ref)} sentences)")
    if args.by_length:
        edges = quantile_edges([source_length(s) for s in src], args.buckets)
        rows = bleu_by_length(src, hyps, ref, edges=edges)
        print(format_length_table(rows))
        if args.plot:
            print(f"wrote {plot_bleu_by_length(rows, args.plot, title='BLEU by source length')}")
    return 0


@torch.no_grad()
def lm(run, args: argparse.Namespace) -> int:
    from qkv.data import PackedTextDataset, make_loader, read_text
    from qkv.recipes.lm import test_data

    block = run.config.max_len
    if args.data:
        ds = PackedTextDataset.from_text(read_text(args.data), run.tokenizer, block)
    else:
        ds, what = test_data(_recipe(run, "--data"), run.tokenizer)
        _say(f"the run's held-out text: {what}")
    total, n = 0.0, 0
    device = next(run.model.parameters()).device
    batches = make_loader(ds, batch_size=16, shuffle=False)
    with bar(args.limit or len(batches), "batch") as update:
        for i, b in enumerate(batches):
            if args.limit is not None and i >= args.limit:
                break
            target = b.target.to(device)
            logits = run.model(b.input.to(device))
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
            n += b.target.numel()
            update(1)
    if n == 0:
        raise UsageError(f"{args.data or 'the held-out text'} is shorter than one block of {block + 1} tokens")
    print(f"loss {total / n:.4f}  perplexity {math.exp(total / n):.3f}  ({n} tokens)")
    return 0


def classification(run, args: argparse.Namespace) -> int:
    from qkv.data import LabelledDataset, make_loader, read_labelled
    from qkv.evaluation import accuracy, f1_score
    from qkv.recipes.classify import predict_batches, test_data

    names = run.extra.get("labels")
    if args.data:
        rows = read_labelled(args.data)[: args.limit]
        ds = LabelledDataset.from_pairs(rows, run.tokenizer, label_names=names, source=args.data,
                                        max_len=getattr(run.config, "max_len", None))
    else:
        ds, what = test_data(_recipe(run, "--data"), run.tokenizer, names)
        _say(f"the run's test split: {what}")
    if getattr(ds, "truncated", None):
        print(f"qkv evaluate: warning: {len(ds.truncated)} example(s) longer than the model's "
              f"{run.config.max_len} tokens were truncated (as in training), the first: example "
              f"{ds.truncated[0] + 1}", file=sys.stderr)
    batches = list(make_loader(ds, batch_size=128, shuffle=False))
    preds, labels = [], []
    with bar(len(batches), "batch") as update:
        for b in batches:
            p, y = predict_batches(run.model, [b])
            preds, labels = preds + p, labels + y
            update(1)
    print(f"accuracy {accuracy(preds, labels):.4f}  macro-F1 {f1_score(preds, labels):.4f}  ({len(labels)} examples)")
    return 0
