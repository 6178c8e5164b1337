"""A run trained from Python with Trainer is usable by the CLI; without a model config the error says how."""

from __future__ import annotations

from qkv.cli import main
from qkv.data import PackedTextDataset, make_loader
from qkv.data.tokenizer_pair import train_tokenizer
from qkv.models import registry
from qkv.training import TrainConfig, Trainer, lm_loss


def _train(out_dir, *, with_config: bool) -> None:
    text = "to be or not to be, that is the question.\n" * 20
    tok = train_tokenizer("char", [text])
    cfg = registry.config("gpt-char-small", vocab_size=tok.vocab_size, num_layers=1, d_model=32, num_heads=2,
                          max_len=16, dropout=0.0)
    loader = make_loader(PackedTextDataset.from_text(text, tok, 16), batch_size=4)
    trainer = Trainer(registry.build_from_config(cfg), lm_loss, loader,
                      TrainConfig(steps=2, out_dir=str(out_dir), progress=False, precision="fp32"),
                      model_config=cfg if with_config else None, tokenizer=tok)
    trainer.fit()


def test_trainer_run_generates_from_the_cli(tmp_path, capsys):
    _train(tmp_path / "run", with_config=True)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "to be", "--max-new-tokens", "20", "--greedy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out.rstrip("\n")) > len("to be")


def test_trainer_run_without_model_config_says_how(tmp_path, capsys):
    _train(tmp_path / "bare", with_config=False)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "bare"), "--prompt", "to"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Trainer(..., model_config=" in err[0] and "tokenizer=" in err[0]
