"""Checkpoints: round trip, tied weights, atomic writes, RNG states, averaging, clear errors."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from qkv.training import (
    CheckpointError,
    average_checkpoints,
    average_last,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    load_weights,
    read_config,
    save_checkpoint,
    schedule_fn,
)
from qkv.training import checkpoint as ckpt
from qkv.training.average import list_checkpoints, prune_checkpoints
from tests.training.training_fixtures import TinyLM


def _trained(seed=0):
    torch.manual_seed(seed)
    model = TinyLM()
    opt = build_optimizer(model, lr=1e-2, fused=False)
    sched = build_scheduler(opt, schedule_fn("cosine", warmup=2, total=10))
    for _ in range(3):
        model(torch.randint(0, 11, (2, 5))).square().mean().backward()
        opt.step(), sched.step(), opt.zero_grad()
    return model, opt, sched


class _Tok:
    def save(self, folder):
        (folder / "tokenizer.json").write_text('{"kind": "test"}')


def test_round_trip_restores_weights_optimizer_scheduler_config_tokenizer(tmp_path):
    model, opt, sched = _trained()
    path = save_checkpoint(tmp_path / "c", model, optimizer=opt, scheduler=sched,
                           trainer_state={"step": 3}, model_config={"d": 16}, tokenizer=_Tok())
    assert (path / "tokenizer.json").read_text() == '{"kind": "test"}'
    assert read_config(path) == {"d": 16}
    model2, opt2, sched2 = _trained(seed=1)
    loaded = load_checkpoint(path, model2, optimizer=opt2, scheduler=sched2)
    assert loaded.trainer_state == {"step": 3}
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert model2.head.weight is model2.embed.weight  # tie survives loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(s1["state"][i][k], s2["state"][i][k]), (i, k)
    assert s1["param_groups"] == s2["param_groups"]
    assert sched.state_dict() == sched2.state_dict()


def test_no_pickle_in_checkpoint(tmp_path):
    model, opt, sched = _trained()
    path = save_checkpoint(tmp_path / "c", model, optimizer=opt, scheduler=sched)
    suffixes = {f.suffix for f in path.iterdir()}
    assert suffixes <= {".safetensors", ".json"}, suffixes
    json.loads((path / "checkpoint.json").read_text())


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    path = save_checkpoint(tmp_path / "c", nn.Linear(1, 1))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    load_checkpoint(path, restore_rng=True)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path):
    model, opt, _ = _trained()
    path = save_checkpoint(tmp_path / "c", model, optimizer=opt, trainer_state={"step": 1})

    class Exploding:
        def save(self, folder):
            raise OSError("disk full")

    model.embed.weight.data.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c", model, optimizer=opt, trainer_state={"step": 2}, tokenizer=Exploding())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary leftovers
    assert load_checkpoint(path).trainer_state == {"step": 1}
    fresh = TinyLM()
    load_weights(fresh, path)
    assert not torch.equal(fresh.embed.weight, model.embed.weight)  # the old weights, intact


def test_overwrite_replaces_whole_directory(tmp_path):
    model, _, _ = _trained()
    save_checkpoint(tmp_path / "c", model, tokenizer=_Tok())
    save_checkpoint(tmp_path / "c", model, trainer_state={"step": 7})
    assert not (tmp_path / "c" / "tokenizer.json").exists()
    assert load_checkpoint(tmp_path / "c").trainer_state == {"step": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_truncated_weights_give_clear_error(tmp_path):
    model, _, _ = _trained()
    path = save_checkpoint(tmp_path / "c", model)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        load_checkpoint(path, TinyLM())


def test_truncated_meta_gives_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c", nn.Linear(2, 2))
    text = (path / "checkpoint.json").read_text()
    (path / "checkpoint.json").write_text(text[:20])
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: not valid JSON"):
        load_checkpoint(path)


def test_foreign_files_give_clear_errors(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, pt)
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(pt, nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="no qkv checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    other = tmp_path / "hf"
    other.mkdir()
    (other / "checkpoint.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="'something-else', expected 'qkv-checkpoint'"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_weights(nn.Linear(2, 2), _copy_as(pt, tmp_path / "x.safetensors"))


def _copy_as(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_weights_for_another_model_give_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c", nn.Linear(2, 3))
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_weights(nn.Linear(2, 4), path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_weights(nn.Sequential(nn.Linear(2, 3)), path)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, nn.Linear(2, 3), optimizer=torch.optim.SGD(nn.Linear(2, 3).parameters()))


def test_average_is_elementwise_mean(tmp_path):
    models = [TinyLM() for _ in range(3)]
    paths = [save_checkpoint(tmp_path / f"step_{i:08d}", m, model_config={"d": 16}) for i, m in enumerate(models)]
    avg = average_checkpoints(paths)
    mean = torch.stack([m.mlp[0].weight.detach().double() for m in models]).mean(0).float()
    torch.testing.assert_close(avg["mlp.0.weight"], mean, rtol=0, atol=1e-7)
    out = average_last(tmp_path, 2)
    fresh = TinyLM()
    load_weights(fresh, out)
    expected = (models[1].embed.weight.double() + models[2].embed.weight.double()) / 2
    torch.testing.assert_close(fresh.embed.weight, expected.float(), rtol=0, atol=1e-7)
    assert read_config(out) == {"d": 16}
    with pytest.raises(ValueError, match="holds 3"):
        average_last(tmp_path, 4)


def test_average_rejects_different_models(tmp_path):
    a = save_checkpoint(tmp_path / "a", nn.Linear(2, 3))
    b = save_checkpoint(tmp_path / "b", nn.Linear(2, 4))
    with pytest.raises(ValueError, match="shape"):
        average_checkpoints([a, b])


def test_prune_keeps_last_and_pinned(tmp_path):
    for i in range(5):
        save_checkpoint(tmp_path / f"step_{i:08d}", nn.Linear(1, 1))
    ckpt.point(tmp_path, "best", tmp_path / "step_00000001")
    ckpt.point(tmp_path, "latest", tmp_path / "step_00000004")
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000003", "step_00000004"]
    assert load_checkpoint(tmp_path).path.name == "step_00000004"  # run dir resolves through `latest`
