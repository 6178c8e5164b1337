"""Recipe configs: YAML fills dataclasses; overrides; errors name the key and list valid ones."""

import json

import pytest

from qkv.recipes import Recipe, RecipeError, load_recipe
from qkv.recipes.config import apply_overrides


def test_round_trip_through_json():
    r = Recipe.from_dict({"task": "lm", "model": "gpt-char-small", "train": {"steps": 7, "betas": [0.9, 0.95]},
                          "data": {"source": "files", "train": "x.txt", "block_size": 32}})
    again = Recipe.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and again.train.betas == (0.9, 0.95) and again.data.block_size == 32


def test_overrides_parse_yaml_scalars(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("task: translation\ntrain: {steps: 5}\n", encoding="utf-8")
    r = load_recipe(f, ["train.steps=9", "train.lr=1e-3", "data.train=[a.de, a.en]", "model_options.d_model=64",
                        "train.time_limit=null"])
    assert r.train.steps == 9 and r.train.lr == 1e-3 and r.data.train == ["a.de", "a.en"]
    assert r.model_options == {"d_model": 64} and r.train.time_limit is None
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    "d, match",
    [
        ({"task": "dance"}, r"task must be one of \('translation', 'lm', 'classify'\), got 'dance'"),
        ({"modle": "x"}, r"unknown key modle; valid keys are: data, decode, label_smoothing, metric_sentences, model, model_options"),
        ({"data": {"sourc": "dates"}}, r"unknown key data.sourc; valid keys in data are: batch_size"),
        ({"train": {"steps": "many"}}, r"train.steps must be int, got 'many'"),
        ({"train": {"lr": True}}, r"train.lr must be float, got True"),
        ({"data": {"source": "web"}}, r"data.source must be one of"),
        ({"train": {"schedule": "linear"}}, r"train: schedule 'linear' is not one of"),
        ({"data": 3}, r"data must be a mapping, got 3"),
    ],
)
def test_errors_name_the_key(d, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict(d)


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="config file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="--set expects key=value"):
        load_recipe(tmp_path / "missing.yaml" if False else _ok(tmp_path), ["train.steps"])


def _ok(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("task: lm\n", encoding="utf-8")
    return f


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 5
    for c in configs:
        assert load_recipe(c).task in ("translation", "lm", "classify")


def test_listops_recipe_draws_expressions_within_min_and_max_length():
    from qkv.recipes.classify import build_data

    recipe = Recipe.from_dict({"task": "classify", "model": "encoder-small",
                               "data": {"source": "listops", "n_train": 30, "n_valid": 5, "n_test": 5,
                                        "min_length": 40, "max_length": 80, "batch_size": 4}})
    data = build_data(recipe)
    lengths = [len(data.train[i].ids) for i in range(len(data.train))]
    assert len(lengths) == 30 and min(lengths) >= 40 and max(lengths) <= 80
