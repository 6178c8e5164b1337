"""One thin function per ``qkv`` command: parse nothing, call the library, print results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from qkv.cli.errors import UsageError


def _lines(path: str | None) -> list[str]:
    """Non-empty input lines from a file or stdin; an empty input is a usage error."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"input file not found: {path}")
        text = p.read_text(encoding="utf-8")
    else:
        text = sys.stdin.read()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"no input: {path or 'stdin'} holds no non-empty line")
    return lines


class _Output:
    def __init__(self, path: str | None) -> None:
        self.path = path

    def __enter__(self) -> TextIO:
        self.f = open(self.path, "w", encoding="utf-8") if self.path else sys.stdout  # noqa: SIM115
        return self.f

    def __exit__(self, *exc: object) -> None:
        if self.path:
            self.f.close()


def _device(args: argparse.Namespace):
    """The ``--device`` of a command (``auto``: CUDA, else MPS, else CPU); an absent device is a usage error."""
    from qkv.hardware import resolve_device

    return resolve_device(getattr(args, "device", "auto"))


def _decode(run, args: argparse.Namespace):
    from qkv.recipes.run import decode_config

    return decode_config(run, beam=getattr(args, "beam", 0), max_len=getattr(args, "max_len", None))


def demo(args: argparse.Namespace) -> int:
    if args.attention_only:
        from qkv.cli.demo import run_attention_demo

        run_attention_demo(seed=args.seed)
        return 0
    from qkv.hardware import cpu_isa
    from qkv.recipes.demo import demo_recipe, run_demo

    if args.precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision {args.precision!r} is not one of auto, fp32, bf16")
    cpu_isa()  # a bad QKV_CPU_ISA is an error before any work
    recipe = demo_recipe(rnn=args.rnn, out_dir=args.out, steps=args.steps, time_limit=args.time_limit,
                         n_train=args.n_train, n_test=args.n_test, seed=args.seed, precision=args.precision)
    run_demo(recipe)
    return 0


def train(args: argparse.Namespace) -> int:
    from qkv.recipes import load_recipe
    from qkv.recipes import train as run_training

    recipe = load_recipe(args.config, args.overrides)
    if args.list_keys:
        from qkv.recipes.keys import format_keys

        print(format_keys(recipe))
        return 0
    result, _ = run_training(recipe, resume=args.resume)
    last = result.evals[-1] if result.evals else {}
    print(f"trained {result.step} steps; last evaluation: {json.dumps(last)}")
    from qkv.recipes import pictures

    curve = pictures.curve_png(recipe.out_dir, Path(recipe.out_dir) / "training_curve.png")
    print(f"run directory: {recipe.out_dir} (best: {result.best_path})" + (f"; curves: {curve}" if curve else ""))
    return 0


def translate(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.translation import translate_texts

    run = load_run(args.run, task="translation", device=_device(args))
    lines = _lines(args.input)
    with _Output(args.output) as out:
        for hyp in translate_texts(run.model, run.tokenizer, lines, _decode(run, args)):
            print(hyp, file=out)
    return 0


def generate(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.config import DecodeConfig
    from qkv.recipes.lm import sample_text

    run = load_run(args.run, task="lm", device=_device(args))
    dec = DecodeConfig(strategy="greedy" if args.greedy else "sample", temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p)
    sys.stdout.write(args.prompt)
    sample_text(run.model, run.tokenizer, args.prompt, dec, max_new_tokens=args.max_new_tokens, seed=args.seed,
                on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    sys.stdout.write("\n")
    return 0


def classify(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.classify import predict

    run = load_run(args.run, task="classify", device=_device(args))
    names = run.extra.get("labels") or [str(i) for i in range(run.config.num_classes)]
    lines = _lines(args.input)
    with _Output(args.output) as out:
        for text, label in zip(lines, predict(run.model, run.tokenizer, lines), strict=True):
            print(f"{names[label]}\t{text}", file=out)
    return 0


def _embeddings(args: argparse.Namespace, lines: list[str]):
    if args.model:
        try:
            from qkv.interop import load_pretrained, sentence_embeddings
        except ImportError as e:
            raise UsageError(f"--model needs qkv.interop, which this install lacks: {e}") from e
        model, tokenizer = load_pretrained(args.model)
        model = model.to(_device(args))
        return sentence_embeddings(model, tokenizer, lines)
    if not args.run:
        raise UsageError("give a qkv encoder run directory or --model FOLDER")
    from qkv.recipes import load_run
    from qkv.recipes.classify import embed

    run = load_run(args.run, task="classify", device=_device(args))
    return embed(run.model, run.tokenizer, lines)


def embed(args: argparse.Namespace) -> int:
    lines = _lines(args.input)
    vectors = _embeddings(args, lines)
    if args.output and args.output.endswith(".npy"):
        import numpy as np

        np.save(args.output, vectors.numpy())
        return 0
    with _Output(args.output) as out:
        for row in vectors.tolist():
            print(json.dumps([round(x, 6) for x in row]), file=out)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from qkv.cli import evaluate as ev
    from qkv.recipes import load_run

    run = load_run(args.run, device=_device(args))
    return {"translation": ev.translation, "lm": ev.lm, "classify": ev.classification}[run.task](run, args)


def attention(args: argparse.Namespace) -> int:
    from qkv.cli.attention import render

    for path in render(args):
        print(f"wrote {path}")
    return 0


def average(args: argparse.Namespace) -> int:
    from qkv.training import average_last

    if not Path(args.run).is_dir():
        raise UsageError(f"run directory not found: {args.run}")
    print(f"wrote {average_last(args.run, args.last, args.out)}")
    return 0


def serve(args: argparse.Namespace) -> int:
    try:
        from qkv.serve.server import serve as run_server
    except ImportError as e:
        raise UsageError(f"qkv serve needs the serve extra: pip install 'qkv[serve]' ({e.name} is missing)") from e
    return run_server(args.run, host=args.host, port=args.port, device=args.device, max_batch=args.max_batch,
                      queue_size=args.queue_size, timeout=args.timeout)


def doctor(args: argparse.Namespace) -> int:
    from qkv.cli.doctor import main as run_doctor

    return run_doctor(bench=args.bench, device=args.device)


def bench(args: argparse.Namespace) -> int:
    import importlib.util

    root = Path(__file__).resolve().parents[3] / "benchmarks" / "run_all.py"
    if not root.is_file():
        raise UsageError("the benchmarks ship with the source tree (benchmarks/run_all.py), not found here")
    spec = importlib.util.spec_from_file_location("qkv_bench_run_all", root)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args.names) + (["--quick"] if args.quick else []))


