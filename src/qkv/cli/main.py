"""``qkv`` entry point: a dispatch table of thin typed command functions (in :mod:`qkv.cli.commands`).

Errors in the user's input (missing file, unknown config key, wrong type, a checkpoint of another task,
empty input) print one line on stderr and exit with status 2; ``QKV_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from qkv.cli import commands
from qkv.cli.errors import UsageError

USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, FileNotFoundError, KeyError)


def _add_decode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=0, metavar="N", help="beam search with N beams (default: greedy)")
    p.add_argument("--max-len", type=int, default=None, help="longest output in tokens (default: the run's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkv", description="Attention and the Transformer, end to end.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job: learn dates -> ISO dates, show accuracy and attention")
    p.add_argument("--rnn", action="store_true", help="the RNN encoder-decoder with additive attention instead")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000)")
    p.add_argument("--time-limit", type=float, default=300.0, help="stop training after this many seconds")
    p.add_argument("--n-train", type=int, default=40000, help="generated training pairs")
    p.add_argument("--n-test", type=int, default=1000, help="held-out test pairs")
    p.add_argument("--out", default=None, help="run directory (default runs/demo or runs/demo-rnn)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto",
                   help="auto (default): bf16 where this device runs bf16 matmuls natively, else fp32; or fp32, bf16")
    p.add_argument("--attention-only", action="store_true", help="only print the attention core on a toy example")
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("train", help="train from a YAML recipe (configs/*.yaml)")
    p.add_argument("config", help="recipe file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set train.steps=200 --set data.batch_size=32")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.set_defaults(func=commands.train)

    p = sub.add_parser("translate", help="translate lines of stdin (or --input) with a trained run")
    p.add_argument("run", help="run or checkpoint directory")
    p.add_argument("--input", help="source file, one sentence per line (default stdin)")
    p.add_argument("--output", help="write translations here (default stdout)")
    _add_decode(p)
    p.set_defaults(func=commands.translate)

    p = sub.add_parser("generate", help="continue a prompt with a language model, streaming tokens")
    p.add_argument("run")
    p.add_argument("--prompt", default="", help="text to continue (default: from scratch)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=commands.generate)

    p = sub.add_parser("classify", help="label lines of stdin (or --input) with a trained classifier")
    p.add_argument("run")
    p.add_argument("--input")
    p.add_argument("--output")
    p.set_defaults(func=commands.classify)

    p = sub.add_parser("embed", help="sentence embeddings (mean pooled, L2-normalised), one JSON array per line")
    p.add_argument("run", nargs="?", help="a qkv encoder run directory")
    p.add_argument("--model", help="a Hugging Face model folder (config.json + model.safetensors + tokenizer.json)")
    p.add_argument("--input")
    p.add_argument("--output", help="write here; a .npy name writes a NumPy array")
    p.set_defaults(func=commands.embed)

    p = sub.add_parser("evaluate", help="BLEU/chrF, exact match, perplexity or accuracy of a trained run")
    p.add_argument("run")
    p.add_argument("--src", help="translation: source file")
    p.add_argument("--ref", help="translation: reference file")
    p.add_argument("--data", help="lm: a text file; classify: a labelled file")
    p.add_argument("--by-length", action="store_true", help="translation: BLEU per source-length bucket")
    p.add_argument("--plot", help="with --by-length: write the plot here (PNG)")
    p.add_argument("--limit", type=int, default=None, help="use the first N examples")
    _add_decode(p)
    p.set_defaults(func=commands.evaluate)

    p = sub.add_parser("attention", help="attention of any layer/head as PNG heatmaps and an HTML explorer")
    p.add_argument("run")
    p.add_argument("--text", required=True, help="the input sentence")
    p.add_argument("--target", help="translation: the output to show (default: the model's translation)")
    p.add_argument("--layer", type=int, default=-1, help="layer for the PNG (default: last)")
    p.add_argument("--out", default="attention", help="output folder")
    p.set_defaults(func=commands.attention)

    p = sub.add_parser("average", help="average the last K checkpoints of a run (as the paper does)")
    p.add_argument("run")
    p.add_argument("--last", type=int, default=5)
    p.add_argument("--out", default=None, help="default RUN/averaged")
    p.set_defaults(func=commands.average)

    p = sub.add_parser("serve", help="serve a run over HTTP: OpenAI-style API, streaming, playground page at /")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one)")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, ...")
    p.add_argument("--max-batch", type=int, default=16, help="most requests decoded together")
    p.add_argument("--queue-size", type=int, default=64, help="most requests waiting; more get 503")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it is cut off")
    p.set_defaults(func=commands.serve)

    p = sub.add_parser("doctor", help="this machine as qkv sees it (versions, CPU class, bf16, precision, kernels)")
    p.add_argument("--bench", action="store_true", help="also time fp32 against bf16 matmuls (~5 s)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.set_defaults(func=commands.doctor)

    p = sub.add_parser("bench", help="run the benchmarks (benchmarks/*.py), JSON into benchmarks/results")
    p.add_argument("names", nargs="*", help="attention models long_context generation training (default all)")
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    p.set_defaults(func=commands.bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("QKV_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"qkv {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
