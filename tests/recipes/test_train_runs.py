"""``train(recipe)``: the top-level ``time_limit`` counts; a used run directory needs resume or overwrite."""

import pytest

from qkv.recipes.config import Recipe, RecipeError
from qkv.recipes.run import train


def _recipe(tmp_path, **top):
    return Recipe.from_dict({
        "task": "translation", "model": "transformer-tiny",
        "model_options": {"d_model": 16, "d_ff": 32, "num_heads": 2, "num_encoder_layers": 1,
                          "num_decoder_layers": 1},
        "data": {"source": "copy", "n_train": 32, "n_valid": 4, "n_test": 4, "max_length": 5, "batch_size": 8},
        "train": {"steps": 1000, "warmup": 0, "progress": False, "device": "cpu"},
        "out_dir": str(tmp_path / "run"), **top,
    })


def test_the_top_level_time_limit_stops_training(tmp_path):
    result, _ = train(_recipe(tmp_path, time_limit=1e-6))
    assert result.step == 1  # out of time after the first update, not after 1000


def test_a_used_run_directory_needs_resume_or_overwrite(tmp_path):
    recipe = _recipe(tmp_path, time_limit=1e-6)
    train(recipe)
    with pytest.raises(RecipeError, match="not empty"):
        train(recipe)
    result, _ = train(recipe, overwrite=True)
    assert result.step == 1
    result, _ = train(recipe, resume=True)
    assert result.step == 2
