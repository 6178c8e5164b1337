"""The command line itself: start-up without torch, --version, help text and examples for every option and
command, --list-keys, --device."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

import qkv
from qkv.cli import main
from qkv.cli.main import build_parser
from qkv.recipes import load_recipe
from qkv.recipes.keys import describe_keys

from .conftest import qkv as run_qkv


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_cli_and_its_help_import_no_torch():
    code = ("import sys\nfrom qkv.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nimport qkv\nprint(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: qkv" in done.stdout and "translate" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_lazy_package_attributes():
    assert qkv.MultiHeadAttention.__name__ == "MultiHeadAttention"
    assert qkv.scaled_dot_product_attention is qkv.functional.scaled_dot_product_attention
    assert set(qkv.__all__) <= set(dir(qkv))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = qkv.nope


def test_version():
    done = run_qkv("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"qkv {qkv.__version__} (torch ") and "Python" in done.stdout


def test_every_option_has_help_and_its_default():
    missing = []
    for name, sub in _subcommands().items():
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            text = sub._get_formatter()._expand_help(action) if action.help else ""
            where = f"qkv {name} {'/'.join(action.option_strings) or action.dest}"
            if not text.strip():
                missing.append(f"{where}: no help")
            takes_value = action.option_strings and action.nargs != 0 and not action.required
            if takes_value and "default" not in text:
                missing.append(f"{where}: default not shown")
    assert not missing, "\n".join(missing)


def test_every_command_ends_with_examples(capsys):
    for name, sub in _subcommands().items():
        assert sub.epilog and sub.epilog.startswith("examples:"), name
        assert f"qkv {name}" in sub.epilog, name
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        shown = capsys.readouterr().out
        assert shown.rstrip().splitlines()[-1].strip().startswith(("qkv ", "echo ")), (name, shown)


def test_list_keys_prints_every_key_its_value_and_meaning(capsys, tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("task: lm\nmodel: gpt-char-small\ntrain: {steps: 7}\n", encoding="utf-8")
    assert main(["train", str(cfg), "--set", "train.lr=0.01", "--list-keys"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" = ")[0]: line for line in out.splitlines()}
    keys = describe_keys(load_recipe(cfg))
    assert set(lines) == {k for k, _, _ in keys}
    assert lines["train.steps"].startswith("train.steps = 7 ") and "optimiser updates" in lines["train.steps"]
    assert lines["train.lr"].startswith("train.lr = 0.01 ")
    assert lines["data.batch_size"].startswith("data.batch_size = 64")
    assert all(meaning for _, _, meaning in keys), [k for k, _, m in keys if not m]
    assert not (tmp_path / "runs").exists()  # listing trains nothing


def test_device_option(dates_run, capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("3 mars 2019\n"))
    assert main(["translate", str(dates_run), "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    if torch.cuda.is_available():
        return
    assert main(["translate", str(dates_run), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0] and err[0].startswith("qkv translate: error:")
