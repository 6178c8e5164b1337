"""The main job: learn to translate human-written dates into ISO dates, then show what attention learned.

``qkv demo`` generates the dates data, trains a small encoder-decoder Transformer (``--rnn``: the RNN
encoder-decoder with additive attention), prints held-out exact match and a few translations, and writes
the checkpoint, a training curve and attention pictures into ``runs/demo`` (``runs/demo-rnn``).
"""

from __future__ import annotations

import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from qkv.evaluation import exact_match
from qkv.recipes import pictures, translation
from qkv.recipes.config import DataConfig, DecodeConfig, Recipe, RecipeError
from qkv.recipes.run import train
from qkv.training import TrainConfig

__all__ = ["demo_recipe", "run_demo", "DemoResult"]


@dataclass
class DemoResult:
    exact_match: float
    train_seconds: float
    steps: int
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped training (nothing was evaluated then)


def demo_recipe(*, rnn: bool = False, out_dir: str | None = None, steps: int | None = None,
                time_limit: float | None = 300.0, n_train: int = 40000, n_test: int = 1000,
                seed: int = 0, precision: str = "auto") -> Recipe:
    """The demo's recipe; ``steps``/``n_train`` shrink it for a quick run.

    With a ``time_limit`` the schedule is fitted to it (``TrainConfig.fit_schedule``): a CPU that makes fewer
    steps in the time gets a shorter but complete cosine. The Transformer takes small batches (32 pairs), so
    that a CPU that trains in fp32 (slower per example) still makes enough updates in its time. ``precision``
    ``auto`` is bf16 where bf16 matmuls are native and fp32 elsewhere (:func:`qkv.hardware.resolve_precision`).

    Raises:
        RecipeError: a count below 1 or a time limit <= 0 (before anything is trained).
    """
    for name, value in (("steps", steps), ("n_train", n_train), ("n_test", n_test)):
        if value is not None and value < 1:
            raise RecipeError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if time_limit is not None and time_limit <= 0:
        raise RecipeError(f"--time-limit must be > 0 seconds, got {time_limit}")
    if rnn:
        model, options, lr, default_steps, batch = "rnn-attention-small", {"embed_dim": 64, "hidden_size": 128,
                                                                           "dropout": 0.0}, 3e-3, 1000, 128
    else:
        model, options, lr, default_steps, batch = "transformer-tiny", {"d_model": 128, "d_ff": 512, "num_heads": 4,
                                                                        "share_embeddings": True}, 2e-3, 4000, 32
    steps = default_steps if steps is None else steps
    return Recipe(
        task="translation",
        model=model,
        model_options=options,
        data=DataConfig(source="dates", n_train=n_train, n_valid=min(200, n_test), n_test=n_test,
                        batch_size=batch, seed=seed),
        train=TrainConfig(steps=steps, lr=lr, warmup=min(100, steps // 10), schedule="cosine", min_lr_ratio=0.05,
                          weight_decay=0.01, eval_every=max(steps // 4, 1), log_every=10, seed=seed,
                          keep_last=1, time_limit=time_limit, fit_schedule=time_limit is not None,
                          monitor="exact_match", mode="max",
                          precision="fp32" if rnn and precision == "auto" else precision,
                          attention_backend=None if rnn else "math"),
        decode=DecodeConfig(strategy="greedy", max_len=12),
        out_dir=out_dir or ("runs/demo-rnn" if rnn else "runs/demo"),
    )


def run_demo(recipe: Recipe, *, n_show: int = 5, n_pictures: int = 3, echo=print) -> DemoResult:
    """Train, evaluate on the held-out test dates, print examples, write pictures."""
    kind = "RNN encoder-decoder + additive attention" if recipe.model.startswith("rnn") else "Transformer"
    echo(f"qkv demo: dates -> ISO dates with a {kind} ({recipe.model}), "
         f"{recipe.data.n_train} generated training pairs, up to {recipe.train.steps} steps of {recipe.data.batch_size}"
         + (f" or {recipe.train.time_limit:.0f} s" if recipe.train.time_limit else ""))
    out = Path(recipe.out_dir)
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        echo(f"(the demo replaces its previous run in {out})")
    t0 = time.perf_counter()
    result, parts = train(recipe, echo=echo, overwrite=True)
    seconds = time.perf_counter() - t0
    if result.interrupted:
        return DemoResult(math.nan, seconds, result.step, out, interrupted=result.signal)
    model, pair, data = parts["model"], parts["tokenizer"], parts["data"]
    test = data.test
    hyps = translation.translate_texts(model, pair, [s for s, _ in test], recipe.decode)
    em = exact_match(hyps, [t for _, t in test])
    echo(f"\ntrained {result.step} steps in {seconds:.0f} s; exact match on {len(test)} held-out dates: {em:.1%}\n")
    examples = [(s, h, t) for (s, t), h in zip(test[:n_show], hyps[:n_show], strict=True)]
    width = max(len(s) for s, _, _ in examples)
    for s, h, t in examples:
        echo(f"  {s:<{width}}  ->  {h:<10}  {'ok' if h == t else 'expected ' + t}")
    files = [p for p in [pictures.curve_png(out, out / "training_curve.png")] if p]
    views = []
    for i, (s, h, _) in enumerate(examples[:n_pictures]):
        maps = translation.attention_maps(model, pair, s, h)
        files.append(pictures.translation_attention_pictures(maps, out / f"attention_{i}.png", title=f"{s} -> {h}"))
        for v in pictures.translation_views(maps):
            v.name = f"{i}: {s} / {v.name}"
            views.append(v)
    files.append(pictures.write_explorer(views, out / "attention.html", title="qkv demo: attention"))
    ckpt = result.best_path or result.last_path
    echo(f"\nwrote {ckpt} (checkpoint)")
    for f in files:
        echo(f"wrote {f}")
    echo("\n" + next_steps(out))
    return DemoResult(em, seconds, result.step, out, files, examples)


def _qkv_command() -> str:
    """How to run this qkv from any directory: ``qkv`` when that is the one on PATH, else its full path."""
    program = Path(sys.argv[0])
    if program.name == "qkv" and program.exists():
        found = shutil.which("qkv")
        if found and Path(found).resolve() == program.resolve():
            return "qkv"
        return shlex.quote(str(program.resolve()))
    return f"{shlex.quote(sys.executable)} -m qkv"


def next_steps(out: Path) -> str:
    """The demo's closing hints, with absolute paths so that they work from any directory."""
    qkv, run = _qkv_command(), shlex.quote(str(out.resolve()))
    lines = ["next:", f"  echo '14 juillet 1989' | {qkv} translate {run}",
             f"  {qkv} attention {run} --text 'Sunday 03.03.19'     # writes {run}/attention/",
             f"  {qkv} demo --rnn            # the same task with the RNN + additive attention"]
    config = Path(__file__).resolve().parents[3] / "configs" / "multi30k_transformer.yaml"
    if config.is_file():  # a source checkout
        lines.append(f"  {qkv} train {shlex.quote(str(config))}   # real translation (../shared/data)")
    return "\n".join(lines)
