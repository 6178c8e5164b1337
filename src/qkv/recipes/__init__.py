"""Recipes: whole tasks (translation, language modelling, classification) from a YAML config, built from
data, models, training, generation and evaluation. The CLI is a thin layer over these."""

from qkv.recipes.config import DataConfig, DecodeConfig, Recipe, RecipeError, TokenizerConfig, load_recipe
from qkv.recipes.run import LoadedRun, load_run, train

__all__ = ["Recipe", "DataConfig", "TokenizerConfig", "DecodeConfig", "RecipeError", "load_recipe", "train",
           "load_run", "LoadedRun"]
