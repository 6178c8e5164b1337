"""``qkv evaluate`` per task: translation (BLEU, chrF, exact match, by length), lm (perplexity), classify."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from qkv.cli.errors import UsageError


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise UsageError(f"evaluating this run needs {' and '.join(missing)}")


def check_limit(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1 (the first N examples), got {args.limit}")


def translation(run, args: argparse.Namespace) -> int:
    from qkv.cli.commands import _decode
    from qkv.data import read_aligned
    from qkv.evaluation import (
        bleu_by_length,
        corpus_bleu,
        corpus_chrf,
        exact_match,
        format_length_table,
        plot_bleu_by_length,
        tokenized_bleu,
    )
    from qkv.recipes.config import InputTooLong
    from qkv.recipes.translation import translate_texts

    _need(args, "src", "ref")
    src, ref = read_aligned(args.src, args.ref)
    if args.limit is not None:
        src, ref = src[: args.limit], ref[: args.limit]
    try:
        hyps = translate_texts(run.model, run.tokenizer, src, _decode(run, args))
    except InputTooLong as e:
        raise UsageError(f"{args.src} line {e.index + 1} has {e.length} tokens; this model reads at most "
                         f"{e.limit}") from e
    bleu, chrf = corpus_bleu(hyps, ref), corpus_chrf(hyps, ref)
    print(f"BLEU  {bleu.score:6.2f}  {bleu.signature}")
    print(f"chrF  {chrf.score:6.2f}  {chrf.signature}")
    print(f"BLEU (tokenised, lowercased) {tokenized_bleu(hyps, ref).score:6.2f}")
    print(f"exact match {exact_match(hyps, ref):.4f}  ({len(ref)} sentences)")
    if args.by_length:
        rows = bleu_by_length(src, hyps, ref)
        print(format_length_table(rows))
        if args.plot:
            print(f"wrote {plot_bleu_by_length(rows, args.plot, title='BLEU by source length')}")
    return 0


@torch.no_grad()
def lm(run, args: argparse.Namespace) -> int:
    from qkv.data import PackedTextDataset, make_loader, read_text

    _need(args, "data")
    block = run.config.max_len
    ds = PackedTextDataset.from_text(read_text(args.data), run.tokenizer, block)
    total, n = 0.0, 0
    device = next(run.model.parameters()).device
    for i, b in enumerate(make_loader(ds, batch_size=16, shuffle=False)):
        if args.limit is not None and i >= args.limit:
            break
        target = b.target.to(device)
        logits = run.model(b.input.to(device))
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
        n += b.target.numel()
    if n == 0:
        raise UsageError(f"{args.data} is shorter than one block of {block + 1} tokens")
    print(f"loss {total / n:.4f}  perplexity {math.exp(total / n):.3f}  ({n} tokens)")
    return 0


def classification(run, args: argparse.Namespace) -> int:
    from qkv.data import LabelledDataset, make_loader, read_labelled
    from qkv.evaluation import accuracy, f1_score
    from qkv.recipes.classify import predict_batches

    _need(args, "data")
    names = run.extra.get("labels")
    rows = read_labelled(args.data)[: args.limit]
    ds = LabelledDataset.from_pairs(rows, run.tokenizer, label_names=names, source=args.data,
                                    max_len=getattr(run.config, "max_len", None))
    if ds.truncated:
        print(f"qkv evaluate: warning: {len(ds.truncated)} example(s) of {args.data} longer than the model's "
              f"{run.config.max_len} tokens were truncated (as in training), the first: example "
              f"{ds.truncated[0] + 1}", file=sys.stderr)
    preds, labels = predict_batches(run.model, make_loader(ds, batch_size=128, shuffle=False))
    print(f"accuracy {accuracy(preds, labels):.4f}  macro-F1 {f1_score(preds, labels):.4f}  ({len(labels)} examples)")
    return 0
