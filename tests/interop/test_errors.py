"""Bad checkpoint folders give errors that say what is wrong, with names and shapes."""

from __future__ import annotations

import argparse
import collections
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qkv.interop import load_pretrained
from tests.interop import hf_builders

transformers = pytest.importorskip("transformers")


@pytest.fixture()
def gpt2_folder(tmp_path):
    folder, _ = hf_builders.gpt2(transformers, tmp_path / "gpt2")
    return folder


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no config\.json.*model\.safetensors"):
        load_pretrained(tmp_path)


def test_unsupported_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"'llama'.*\['bart', 'bert', 'gpt2', 'marian'\]"):
        load_pretrained(tmp_path)


def test_truncated_safetensors(gpt2_folder):
    path = gpt2_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_pretrained(gpt2_folder)


def test_no_weights_file(gpt2_folder):
    (gpt2_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_pretrained(gpt2_folder)


def test_missing_unexpected_and_misshapen_tensors_are_named(gpt2_folder):
    def edit(state):
        del state["transformer.h.1.ln_2.bias"]
        state["transformer.h.0.extra.weight"] = torch.zeros(3)
        state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(32, 100)

    _edit_weights(gpt2_folder, edit)
    with pytest.raises(ValueError) as info:
        load_pretrained(gpt2_folder)
    msg = str(info.value)
    assert "missing tensor h.1.ln_2.bias (expected shape (32,))" in msg
    assert "unexpected tensor h.0.extra.weight (shape (3,))" in msg
    assert "misshapen tensor h.0.mlp.c_fc.weight: checkpoint has (32, 100), model expects (32, 128)" in msg


def test_unsupported_config_option(gpt2_folder):
    cfg = json.loads((gpt2_folder / "config.json").read_text())
    cfg["scale_attn_by_inverse_layer_idx"] = True
    (gpt2_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"scale_attn_by_inverse_layer_idx=True \(needs False\)"):
        load_pretrained(gpt2_folder)


def test_legacy_bin_loads_plain_tensors_only(gpt2_folder):
    state = load_file(str(gpt2_folder / "model.safetensors"))
    (gpt2_folder / "model.safetensors").unlink()
    torch.save(state, gpt2_folder / "pytorch_model.bin")
    model, _ = load_pretrained(gpt2_folder)
    assert torch.equal(model.embed.token.weight, state["transformer.wte.weight"])
    # An arbitrary class (argparse.Namespace): weights_only refuses to unpickle it.
    torch.save({"wte.weight": argparse.Namespace(a=1)}, gpt2_folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="never unpickles other objects") as e:
        load_pretrained(gpt2_folder)
    assert "Namespace" in str(e.value) and "weights_only=False" not in str(e.value)  # not torch's advice
    # Allowed containers that are still not tensors are named.
    torch.save({"wte.weight": collections.Counter(a=1)}, gpt2_folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"not tensors: \['wte.weight'\]"):
        load_pretrained(gpt2_folder)


def test_sharded_safetensors_index(gpt2_folder):
    state = load_file(str(gpt2_folder / "model.safetensors"))
    (gpt2_folder / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(gpt2_folder / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (gpt2_folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model, _ = load_pretrained(gpt2_folder)
    assert torch.equal(model.decoder.norm.bias, state["transformer.ln_f.bias"])


def test_a_tampered_config_is_checked_against_the_weights_before_allocating(gpt2_folder):
    cfg = json.loads((gpt2_folder / "config.json").read_text())
    cfg |= {"n_inner": 2**45}  # a 2^45 x 32 feed-forward weight: 4 PiB, more than any address space holds
    (gpt2_folder / "config.json").write_text(json.dumps(cfg))
    # built before the check, this model fails in the allocator (a RuntimeError naming no file)
    with pytest.raises(ValueError, match=r"does not fit the model built from its config\.json.*misshapen"):
        load_pretrained(gpt2_folder)


def test_invalid_tokenizer_json_names_the_file(gpt2_folder):
    (gpt2_folder / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}')
    with pytest.raises(ValueError, match=r"tokenizer\.json is not a valid tokenizer\.json"):
        load_pretrained(gpt2_folder)


def test_shard_index_without_weight_map_or_pointing_outside(gpt2_folder):
    state = load_file(str(gpt2_folder / "model.safetensors"))
    (gpt2_folder / "model.safetensors").unlink()
    index = gpt2_folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"index\.json has no weight_map"):
        load_pretrained(gpt2_folder)
    save_file(state, str(gpt2_folder.parent / "outside.safetensors"))
    index.write_text(json.dumps({"weight_map": {k: "../outside.safetensors" for k in state}}))
    with pytest.raises(ValueError, match=r"shard '\.\./outside\.safetensors' lies outside"):
        load_pretrained(gpt2_folder)
