"""The lines ``qkv train`` prints around a run: a header before the first update and a closing line that says
why the run ended, where its checkpoint is and how to go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkv.hardware import capabilities
from qkv.recipes.config import Recipe
from qkv.training import Trainer, TrainResult

__all__ = ["header", "ending"]


def _size(data: Any) -> str | None:
    try:
        return f"{len(data):,}"
    except TypeError:
        return None


def _data_line(recipe: Recipe, data: Any) -> str:
    sizes = [f"{n} {name}" for name in ("train", "valid", "test")
             if (n := _size(getattr(data, name, None))) is not None]
    unit = {"lm": f"blocks of {recipe.data.block_size} tokens", "classify": "examples"}.get(
        recipe.task, "sentence pairs")
    source = recipe.data.source if recipe.data.source != "files" else "files"
    return f"data: {', '.join(sizes)} {unit} ({source})"


def _vocabulary(tokenizer: Any) -> str:
    if hasattr(tokenizer, "source") and hasattr(tokenizer, "target"):
        src, tgt = tokenizer.source.vocab_size, tokenizer.target.vocab_size
        return f"vocabulary {src:,}" if tokenizer.source is tokenizer.target else \
            f"vocabulary {src:,} (source) / {tgt:,} (target)"
    return f"vocabulary {tokenizer.vocab_size:,}"


def _budget(trainer: Trainer) -> str:
    cfg = trainer.config
    text = f"budget: {cfg.steps:,} steps"
    if cfg.time_limit is not None:
        text += f" or {cfg.time_limit:g} s, whichever comes first"
        if cfg.fit_schedule:
            text += " (the schedule is fitted to the time once the speed is known)"
    every = f"every {cfg.eval_every:,} steps and " if cfg.eval_every else ""
    return text + f"; evaluation {every}at the end"


def _split(trainer: Trainer) -> str:
    if trainer.batch_split < 2:
        return ""
    unless = " unless the step draws random numbers" if trainer.config.batch_split == "auto" else ""
    asked = trainer.config.batch_split
    return f"; batches split over {trainer.batch_split} threads{unless} (train.batch_split: {asked})"


def header(recipe: Recipe, parts: dict[str, Any], trainer: Trainer) -> list[str]:
    """What is about to run: task, model and size, data, vocabulary, device and precision, budget, directory."""
    n_params = sum(p.numel() for p in trainer.model.parameters())
    model = "pretrained " + str(recipe.pretrained) if recipe.pretrained else recipe.model
    return [
        f"{recipe.task}: {model} ({type(parts['cfg']).__name__}), {n_params:,} parameters",
        f"{_data_line(recipe, parts['data'])}; {_vocabulary(parts['tokenizer'])}",
        f"device: {capabilities(trainer.device)}; precision {trainer.precision} "
        f"(train.precision: {trainer.config.precision}){_split(trainer)}",
        _budget(trainer),
        f"run directory: {recipe.out_dir}",
    ]


def ending(result: TrainResult, time_limit: float | None, resume: str) -> str | None:
    """Why a run stopped before its planned end, its checkpoint and the command that continues it; ``None``
    for a run that simply finished. A signal's line is the caller's (it also sets the exit status)."""
    checkpoint = result.last_path or result.best_path
    where = f"checkpoint {Path(checkpoint)}" if checkpoint else "no checkpoint"
    if result.timed_out:
        return (f"stopped by the time limit ({time_limit:g} s) at step {result.step:,}; {where}; "
                f"continue with: {resume}")
    if result.stopped_early:
        return f"stopped early at step {result.step:,}: no better evaluation in a row of patience; {where}"
    return None
