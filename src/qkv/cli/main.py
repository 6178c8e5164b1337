"""``qkv`` entry point: a dispatch table of thin typed command functions (in :mod:`qkv.cli.commands`).

Errors in the user's input (missing file, unknown config key, wrong type, a checkpoint of another task,
empty input) print one line on stderr and exit with status 2; ``QKV_DEBUG=1`` shows the traceback.
Nothing here imports torch: ``qkv --help`` and ``qkv --version`` answer at once, each command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from qkv.cli import commands
from qkv.cli.errors import UsageError

USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, OSError, KeyError)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (``qkv CMD: error: ...``) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _message(e: BaseException) -> str:
    """One line for a user error: an OSError from the system names its path and what the system said."""
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.strerror:
        if e.filename is None:
            return e.strerror
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return f"{where}: {e.strerror}"
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


DEVICES = "auto|cpu|cuda|mps"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends ``(default: X)`` to options whose default is a value."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or not action.option_strings or default is None or default is False or default == [] \
                or default is argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def _command(sub, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose help starts with ``summary`` and ends with ``examples`` (one per line)."""
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                          epilog="examples:\n" + examples.strip("\n"), formatter_class=_Formatter)


def _add_decode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=0, metavar="N", help="beam search with N beams (default: greedy)")
    p.add_argument("--max-len", type=int, default=None, metavar="N",
                   help="longest output in tokens (default: the run's decode.max_len)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar=DEVICES,
                   help="where the model runs: auto picks CUDA, else MPS, else the CPU; or cuda:N")


def _add_io(p: argparse.ArgumentParser, what: str, out: str) -> None:
    p.add_argument("--input", metavar="FILE",
                   help=f"{what}, one per line (default: stdin, each line answered as it comes)")
    p.add_argument("--output", metavar="FILE", help=f"write {out} here (default: stdout)")


def build_parser() -> argparse.ArgumentParser:
    from qkv import __version__

    parser = _Parser(
        prog="qkv", description="Attention and the Transformer, end to end.", formatter_class=_Formatter,
        epilog="examples:\n  qkv demo\n  qkv train configs/dates_demo.yaml --set train.steps=200\n"
               "  qkv COMMAND --help")
    parser.add_argument("--version", action="version", version=f"qkv {__version__}{_versions()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_demo_parser, _train_parser, _translate_parser, _generate_parser, _classify_parser, _embed_parser,
                _evaluate_parser, _attention_parser, _average_parser, _serve_parser, _doctor_parser,
                _bench_parser):
        add(sub)
    return parser


def _demo_parser(sub) -> None:
    p = _command(sub, "demo", "the main job: learn dates -> ISO dates, show accuracy and attention", """
  qkv demo                       # trains for up to 5 minutes, writes runs/demo
  qkv demo --rnn --time-limit 120 --out runs/demo-rnn""")
    p.add_argument("--rnn", action="store_true", help="the RNN encoder-decoder with additive attention instead")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="most training steps (default: 4000, 1000 with --rnn; the time limit plans fewer on a "
                        "slower machine)")
    p.add_argument("--time-limit", type=float, default=300.0, metavar="SECONDS",
                   help="stop training after this many seconds")
    p.add_argument("--n-train", type=int, default=40000, metavar="N", help="generated training pairs")
    p.add_argument("--n-test", type=int, default=1000, metavar="N", help="held-out test pairs")
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (default: runs/demo or runs/demo-rnn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    p.add_argument("--precision", default="auto", metavar="auto|fp32|bf16",
                   help="auto: bf16 where this device runs bf16 matmuls natively, else fp32")
    p.add_argument("--attention-only", action="store_true", help="only print the attention core on a toy example")
    p.set_defaults(func=commands.demo)


def _train_parser(sub) -> None:
    p = _command(sub, "train", "train from a YAML recipe (configs/*.yaml)", """
  qkv train configs/dates_demo.yaml --set train.steps=200 --set train.eval_every=100
  qkv train configs/shakespeare_char.yaml --list-keys     # every --set key, its value and meaning""")
    p.add_argument("config", help="recipe file (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, repeatable, e.g. --set train.steps=200 --set data.batch_size=32 "
                        "(default: none; --list-keys shows them all)")
    p.add_argument("--list-keys", action="store_true",
                   help="print every --set key with its value in this recipe and what it means, then exit")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in the run directory (its checkpoints, metrics and pictures)")
    p.set_defaults(func=commands.train)


def _translate_parser(sub) -> None:
    p = _command(sub, "translate", "translate lines of stdin (or --input) with a trained run", """
  echo "3 mars 2019" | qkv translate runs/demo
  qkv translate runs/multi30k-transformer --input test.de --output test.hyp --beam 4""")
    p.add_argument("run", help="run or checkpoint directory")
    _add_io(p, "source sentences", "the translations")
    _add_decode(p)
    _add_device(p)
    p.set_defaults(func=commands.translate)


def _generate_parser(sub) -> None:
    p = _command(sub, "generate", "continue a prompt with a language model, streaming tokens", """
  qkv generate runs/shakespeare-char --prompt "ROMEO:" --max-new-tokens 300 --top-k 40
  echo "JULIET:" | qkv generate runs/shakespeare-char --greedy --max-new-tokens 100""")
    p.add_argument("run", help="run or checkpoint directory of a language model")
    p.add_argument("--prompt", default=None,
                   help="text to continue; \"\" starts from scratch (default: each line of stdin is a prompt, "
                        "answered as it comes; an empty stdin starts from scratch)")
    p.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                   help="tokens to add to the prompt; past the model's context C the window slides (the model sees "
                        "at most C tokens, then the last C/2), as qkv.generation.generate does")
    p.add_argument("--temperature", type=float, default=0.8, help="divide the logits by this before sampling")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens "
                   "(default: all)")
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="sample among the likeliest tokens holding probability P (default: all)")
    p.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    _add_device(p)
    p.set_defaults(func=commands.generate)


def _classify_parser(sub) -> None:
    p = _command(sub, "classify", "label lines of stdin (or --input) with a trained classifier", """
  echo "a gorgeous, witty, seductive movie" | qkv classify runs/sst2-encoder
  qkv classify runs/sst2-minilm --input reviews.txt --output labels.tsv""")
    p.add_argument("run", help="run or checkpoint directory of a classifier")
    _add_io(p, "texts", "label<TAB>text lines")
    _add_device(p)
    p.set_defaults(func=commands.classify)


def _embed_parser(sub) -> None:
    p = _command(sub, "embed", "sentence embeddings (mean pooled, L2-normalised), one JSON array per line", """
  qkv embed runs/sst2-encoder --input sentences.txt --output vectors.npy
  echo "a sentence" | qkv embed --model ~/models/all-MiniLM-L6-v2""")
    p.add_argument("run", nargs="?", help="a qkv encoder run directory (or give --model)")
    p.add_argument("--model", metavar="FOLDER",
                   help="a Hugging Face model folder (config.json + model.safetensors + tokenizer.json) "
                        "instead of a run (default: use RUN)")
    _add_io(p, "sentences", "the vectors (a .npy name writes one NumPy array)")
    _add_device(p)
    p.set_defaults(func=commands.embed)


def _evaluate_parser(sub) -> None:
    p = _command(sub, "evaluate", "BLEU/chrF, exact match, perplexity or accuracy of a trained run", """
  qkv evaluate runs/demo --by-length          # the run's own test split, from its recipe
  qkv evaluate runs/multi30k-transformer --src test.de.gz --ref test.en.gz --output test.hyp --beam 4""")
    p.add_argument("run", help="run or checkpoint directory")
    p.add_argument("--src", metavar="FILE", help="translation: source file (default: the run's test split)")
    p.add_argument("--ref", metavar="FILE", help="translation: reference file (default: the run's test split)")
    p.add_argument("--data", metavar="FILE",
                   help="lm: a text file; classify: a labelled file (default: the run's test split or held-out text)")
    p.add_argument("--output", metavar="FILE",
                   help="translation: also write the hypotheses here, one per line (default: not kept)")
    p.add_argument("--by-length", action="store_true", help="translation: BLEU per source-length bucket")
    p.add_argument("--buckets", type=int, default=5, metavar="N",
                   help="with --by-length: this many buckets of about equal size (quantiles of the source lengths)")
    p.add_argument("--plot", metavar="PNG", help="with --by-length: write the plot here (default: no plot)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N examples (default: all)")
    _add_decode(p)
    _add_device(p)
    p.set_defaults(func=commands.evaluate)


def _attention_parser(sub) -> None:
    p = _command(sub, "attention", "attention of any layer/head as PNG heatmaps and an HTML explorer", """
  qkv attention runs/demo --text "3 mars 2019"      # writes runs/demo/attention/
  qkv attention runs/shakespeare-char --text "ROMEO: what" --layer 0 --out pictures""")
    p.add_argument("run", help="run or checkpoint directory")
    p.add_argument("--text", required=True, help="the input sentence")
    p.add_argument("--target", help="translation: the output to show (default: the model's translation)")
    p.add_argument("--layer", type=int, default=-1, help="layer for the PNG (default: -1, the last)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN/attention)")
    _add_device(p)
    p.set_defaults(func=commands.attention)


def _average_parser(sub) -> None:
    p = _command(sub, "average", "average the last K checkpoints of a run (as the paper does)", """
  qkv average runs/multi30k-transformer --last 5     # writes runs/multi30k-transformer/averaged""")
    p.add_argument("run", help="run directory")
    p.add_argument("--last", type=int, default=5, metavar="K", help="how many of the latest checkpoints")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write them (default: RUN/averaged)")
    p.set_defaults(func=commands.average)


def _serve_parser(sub) -> None:
    p = _command(sub, "serve", "serve a run over HTTP: OpenAI-style API, streaming, playground page at /", """
  qkv serve runs/demo                         # then open http://127.0.0.1:8000/
  qkv serve runs/shakespeare-char --port 0 --max-batch 32""")
    p.add_argument("run", help="run or checkpoint directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one)")
    _add_device(p)
    p.add_argument("--max-batch", type=int, default=16, metavar="N", help="most requests decoded together")
    p.add_argument("--queue-size", type=int, default=64, metavar="N", help="most requests waiting; more get 503")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="seconds per request before it is cut off")
    p.set_defaults(func=commands.serve)


def _doctor_parser(sub) -> None:
    p = _command(sub, "doctor", "this machine as qkv sees it (versions, CPU class, bf16, precision, kernels)", """
  qkv doctor
  qkv doctor --bench                          # adds a ~5 s fp32 vs bf16 matmul probe""")
    p.add_argument("--bench", action="store_true", help="also time fp32 against bf16 matmuls (~5 s)")
    _add_device(p)
    p.add_argument("--build", action="store_true", help="build qkv's C kernels now (cached) and say how it went")
    p.set_defaults(func=commands.doctor)


def _bench_parser(sub) -> None:
    p = _command(sub, "bench", "run the benchmarks (benchmarks/*.py), JSON into benchmarks/results", """
  qkv bench attention --quick
  qkv bench generation training""")
    p.add_argument("names", nargs="*",
                   help="any of attention models long_context generation training (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    p.set_defaults(func=commands.bench)


def _versions() -> str:
    """``" (torch X, Python Y)"`` from installed metadata, without importing torch."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f" (torch {torch_version}, Python {sys.version.split()[0]})"


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
        print(f"qkv {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
