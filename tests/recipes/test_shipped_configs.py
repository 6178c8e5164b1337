"""The shipped configs: each loads, leaves precision to the hardware, and the demo config is the demo."""

from dataclasses import replace
from pathlib import Path

import pytest

from qkv.recipes import load_recipe
from qkv.recipes.demo import demo_recipe

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_says_precision_auto(path):
    assert load_recipe(path).train.precision == "auto"
    assert "bf16" not in path.read_text(encoding="utf-8")


def test_dates_config_is_the_demo_recipe():
    demo, config = demo_recipe(), load_recipe(CONFIGS[0].with_name("dates_demo.yaml"))
    assert config.train.fit_schedule and config.train.time_limit == 300
    assert replace(config, out_dir=demo.out_dir).to_dict() == demo.to_dict()
