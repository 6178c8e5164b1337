"""Fixed training constants are recipe fields (recorded in recipe.json), and the training curve says what the
training loss has that the validation loss has not."""

from __future__ import annotations

import json

import pytest

from qkv.recipes import Recipe, RecipeError
from qkv.recipes.pictures import loss_note
from qkv.viz import training_curves


def test_label_smoothing_is_a_recipe_field_with_task_defaults():
    assert Recipe(task="translation").label_smoothing == 0.1
    assert Recipe(task="lm").label_smoothing == 0.0
    assert Recipe.from_dict({"task": "lm", "label_smoothing": 0.2}).label_smoothing == 0.2
    with pytest.raises(RecipeError, match="label_smoothing must be in"):
        Recipe(label_smoothing=1.0)


def test_run_records_its_constants_and_the_curve_notes_them(dates_run):
    saved = json.loads((dates_run / "recipe.json").read_text(encoding="utf-8"))
    assert saved["label_smoothing"] == 0.1 and saved["metric_sentences"] == 300
    assert loss_note(dates_run) == "train loss: label smoothing 0.1 (not in val loss)"  # the tiny model has no dropout


def test_curve_legend_carries_the_note():
    records = [{"split": "train", "step": 1, "loss": 2.0}, {"split": "eval", "step": 1, "loss": 1.5}]
    fig = training_curves(records, loss_note="train loss: dropout 0.1")
    loss_panel = next(ax for ax in fig.axes if ax.get_title() == "loss")
    assert loss_panel.get_legend().get_title().get_text() == "train loss: dropout 0.1"
