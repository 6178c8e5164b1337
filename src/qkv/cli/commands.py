"""One thin function per ``qkv`` command: parse nothing, call the library, print results."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from qkv.cli.errors import UsageError


@dataclass
class InputLines:
    """Non-empty, stripped input lines and where each came from (for messages that name the line)."""

    texts: list[str]
    numbers: list[int]
    name: str

    def where(self, i: int) -> str:
        return f"{self.name} line {self.numbers[i]}"

    def part(self, start: int, stop: int) -> InputLines:
        return InputLines(self.texts[start:stop], self.numbers[start:stop], self.name)


def _lines(path: str | None) -> InputLines:
    """Non-empty input lines from a file or stdin (strict UTF-8); an empty input is a usage error."""
    from qkv.data.files import decode_lines, iter_lines

    if path:
        if not Path(path).is_file():
            raise UsageError(f"input file not found: {path}")
        numbered = list(iter_lines(path))
    else:
        buffer = getattr(sys.stdin, "buffer", None)  # bytes, so that bad bytes are an error naming the line
        numbered = decode_lines(buffer.read() if buffer is not None else sys.stdin.read().encode(), "stdin")
    kept = [(n, line.strip()) for n, line in numbered if line.strip()]
    if not kept:
        raise UsageError(f"no input: {path or 'stdin'} holds no non-empty line")
    return InputLines([t for _, t in kept], [n for n, _ in kept], path or "stdin")


@contextlib.contextmanager
def _output(path: str | None, mode: str = "w") -> Iterator[TextIO]:
    """stdout, or a file replaced only when the command succeeds (a failure leaves it as it was)."""
    if not path:
        yield sys.stdout
        return
    from qkv.data.files import atomic_open

    with atomic_open(path, mode) as f:
        yield f


def _warn(command: str) -> Callable[[str], None]:
    return lambda message: print(f"qkv {command}: warning: {message}", file=sys.stderr)


def _device(args: argparse.Namespace):
    """The ``--device`` of a command (``auto``: CUDA, else MPS, else CPU); an absent device is a usage error."""
    from qkv.hardware import resolve_device

    return resolve_device(getattr(args, "device", "auto"))


def _decode(run, args: argparse.Namespace):
    from qkv.recipes.run import decode_config

    return decode_config(run, beam=getattr(args, "beam", 0), max_len=getattr(args, "max_len", None))


def _interrupted(result, resume: str) -> int:
    """One line saying training was stopped by a signal, and the exit status of that signal (128 + number)."""
    number = result.signal or signal.SIGINT
    print(f"qkv train: interrupted by {signal.Signals(number).name} at step {result.step}; "
          f"checkpoint {result.last_path}; resume with: {resume}", file=sys.stderr)
    return 128 + number


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
    result = run_demo(recipe)
    if result.interrupted:
        print(f"qkv demo: interrupted by {signal.Signals(result.interrupted).name} after {result.steps} steps; "
              "nothing evaluated (run qkv demo again to start over)", file=sys.stderr)
        return 128 + result.interrupted
    return 0


def train(args: argparse.Namespace) -> int:
    from qkv.recipes import load_recipe
    from qkv.recipes import train as run_training

    recipe = load_recipe(args.config, args.overrides)
    if args.list_keys:
        from qkv.recipes.keys import format_keys

        print(format_keys(recipe))
        return 0
    result, _ = run_training(recipe, resume=args.resume, overwrite=args.overwrite)
    sets = [x for o in args.overrides for x in ("--set", o)]
    resume = shlex.join(["qkv", "train", args.config, *sets, "--resume"])
    if result.interrupted:
        return _interrupted(result, resume)
    from qkv.recipes import feedback, pictures
    from qkv.training.progress import metrics_line

    ending = feedback.ending(result, recipe.train.time_limit or recipe.time_limit, resume)
    if ending:
        print(ending)
    last = metrics_line(result.step, result.evals[-1]) if result.evals else f"step {result.step}: not evaluated"
    print(f"trained {result.step:,} steps; last evaluation at {last}")
    curve = pictures.curve_png(recipe.out_dir, Path(recipe.out_dir) / "training_curve.png")
    print(f"run directory: {recipe.out_dir} (best: {result.best_path})" + (f"; curves: {curve}" if curve else ""))
    use = {"translation": "translate", "lm": "generate", "classify": "classify"}[recipe.task]
    print(f"next: qkv {use} {shlex.quote(recipe.out_dir)}; qkv evaluate {shlex.quote(recipe.out_dir)}")
    return 0


def _too_long(lines: InputLines, e) -> UsageError:
    return UsageError(f"{lines.where(e.index)} has {e.length} tokens; this model reads at most {e.limit}")


def _answer(args: argparse.Namespace, answer: Callable[[InputLines], list[str]], what: str) -> int:
    """Answer ``--input`` as one batch job (with a progress bar), or stdin line by line as the lines arrive; one
    output line per input line, a blank line for a blank line. ``answer`` gets the non-blank lines, numbered."""
    from qkv.cli.progress import CHUNK, bar, wrote
    from qkv.cli.stream import answer_lines

    name = args.input or "stdin"
    with _output(args.output) as out:
        if args.input:
            lines = _lines(args.input)  # an input without a non-empty line is an error
            answers: list[str] = []
            with bar(len(lines.texts), "line") as update:
                for start in range(0, len(lines.texts), CHUNK):
                    part = lines.part(start, start + CHUNK)
                    answers += answer(part)
                    update(len(part.texts))
            by_number = dict(zip(lines.numbers, answers, strict=True))
            count = _line_count(args.input)
            out.writelines(by_number.get(n, "") + "\n" for n in range(1, count + 1))
        else:
            banner = f"qkv {args.command}: type {what} and press Enter (Ctrl-D ends)"
            count = answer_lines(lambda texts, numbers: answer(InputLines(list(texts), list(numbers), name)), out,
                                 banner=banner, name=name)
            if count == 0:
                raise UsageError("no input: stdin is empty")
    if args.output:
        wrote(args.command, f"{count:,} lines (one per input line)", args.output)
    return 0


def _line_count(path: str) -> int:
    from qkv.data.files import iter_lines

    return sum(1 for _ in iter_lines(path))


def translate(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.config import InputTooLong
    from qkv.recipes.translation import translate_texts

    run = load_run(args.run, task="translation", device=_device(args))
    dec = _decode(run, args)

    def answer(lines: InputLines) -> list[str]:
        try:
            return translate_texts(run.model, run.tokenizer, lines.texts, dec)
        except InputTooLong as e:
            raise _too_long(lines, e) from e

    return _answer(args, answer, "a sentence")


def generate(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.config import DecodeConfig
    from qkv.recipes.lm import sample_text

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    run = load_run(args.run, task="lm", device=_device(args))
    dec = DecodeConfig(strategy="greedy" if args.greedy else "sample", temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p)

    def continue_(prompt: str) -> None:  # the prompt, then each piece as it comes, then a newline
        sys.stdout.write(prompt)
        sample_text(run.model, run.tokenizer, prompt, dec, max_new_tokens=args.max_new_tokens, seed=args.seed,
                    on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        sys.stdout.write("\n")
        sys.stdout.flush()

    if args.prompt is not None:
        continue_(args.prompt)
        return 0
    from qkv.cli.stream import line_groups

    if sys.stdin.isatty():
        print("qkv generate: type a prompt and press Enter (Ctrl-D ends)", file=sys.stderr, flush=True)
    prompts = 0
    for group in line_groups(sys.stdin, max_group=1):
        for _, line in group:
            prompts += 1
            if line.strip():
                continue_(line)
            else:
                print(flush=True)
    if prompts == 0 and not sys.stdin.isatty():
        continue_("")  # nothing on stdin: one sample from scratch
    return 0


def classify(args: argparse.Namespace) -> int:
    from qkv.recipes import load_run
    from qkv.recipes.classify import predict

    run = load_run(args.run, task="classify", device=_device(args))
    names = run.extra.get("labels") or [str(i) for i in range(run.config.num_classes)]

    def answer(lines: InputLines) -> list[str]:
        labels = predict(run.model, run.tokenizer, lines.texts, on_truncate=_truncated(lines, _warn("classify")))
        return [f"{names[label]}\t{text}" for text, label in zip(lines.texts, labels, strict=True)]

    return _answer(args, answer, "a text to label")


def _truncated(lines: InputLines, warn: Callable[[str], None]) -> Callable[[int, int, int], None]:
    def report(i: int, n: int, limit: int) -> None:
        warn(f"{lines.where(i)} has {n} tokens; truncated to the model's {limit} (as in training)")

    return report


def _embeddings(args: argparse.Namespace, lines: InputLines):
    if args.model:
        try:
            from qkv.interop import load_pretrained, sentence_embeddings
        except ImportError as e:
            raise UsageError(f"--model needs qkv.interop, which this install lacks: {e}") from e
        model, tokenizer = load_pretrained(args.model)
        if tokenizer is None:
            raise UsageError(f"--model {args.model} has no tokenizer.json")
        model = model.to(_device(args))
        return _in_parts(lines, lambda part: sentence_embeddings(model, tokenizer, part.texts))
    if not args.run:
        raise UsageError("give a qkv encoder run directory or --model FOLDER")
    from qkv.recipes import load_run
    from qkv.recipes.classify import embed

    run = load_run(args.run, task="classify", device=_device(args))
    return _in_parts(lines, lambda part: embed(run.model, run.tokenizer, part.texts,
                                               on_truncate=_truncated(part, _warn("embed"))))


def _in_parts(lines: InputLines, fn):
    """``fn`` over ``lines`` a chunk at a time (rows concatenated), with a progress bar on a terminal."""
    import torch

    from qkv.cli.progress import CHUNK, bar

    parts = []
    with bar(len(lines.texts), "sentence") as update:
        for start in range(0, len(lines.texts), CHUNK):
            parts.append(fn(lines.part(start, start + CHUNK)))
            update(len(parts[-1]))
    return torch.cat(parts)


def embed(args: argparse.Namespace) -> int:
    lines = _lines(args.input)
    vectors = _embeddings(args, lines)
    bad = [i for i, ok in enumerate(vectors.isfinite().all(dim=-1).tolist()) if not ok]
    if bad:
        raise UsageError(f"the model's embedding of {lines.where(bad[0])} is not finite (NaN or inf) "
                         f"({len(bad)} of {len(lines.texts)} lines); are its weights broken?")
    if args.output and args.output.endswith(".npy"):
        import numpy as np

        with _output(args.output, "wb") as f:
            np.save(f, vectors.numpy(), allow_pickle=False)
    else:
        with _output(args.output) as out:
            for row in vectors.tolist():
                print(json.dumps([round(x, 6) for x in row]), file=out)
    if args.output:
        from qkv.cli.progress import wrote

        wrote("embed", f"{len(vectors):,} vectors of {vectors.shape[1]}", args.output)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from qkv.cli import evaluate as ev
    from qkv.recipes import load_run

    ev.check_limit(args)
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

    if args.build:
        from qkv.kernels import build

        print(build(), flush=True)
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


