"""torch.export and ONNX (checked with onnxruntime, <= 1e-4) of the encoder and one cached decoder step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qkv.generation import generate
from qkv.interop import load_pretrained
from qkv.interop.onnx_export import (
    export_decoder_prefill_onnx,
    export_decoder_step,
    export_decoder_step_onnx,
    export_encoder,
    export_encoder_onnx,
    export_seq2seq_onnx,
)
from qkv.models import DecoderConfig, DecoderModel, EncoderConfig, EncoderModel
from tests.interop import hf_builders


def _encoder() -> EncoderModel:
    cfg = EncoderConfig(vocab_size=45, num_layers=2, d_model=32, num_heads=4, d_ff=40, max_len=20,
                        positional="learned", activation="gelu", scale_embeddings=False, num_segments=2,
                        embedding_norm=True, dropout=0.0)
    return EncoderModel(cfg).eval()


def _decoder() -> DecoderModel:
    cfg = DecoderConfig(vocab_size=41, num_layers=2, d_model=32, num_heads=4, max_len=24,
                        positional="learned", norm_first=True, activation="gelu_tanh", scale_embeddings=False,
                        pad_id=None, dropout=0.0)
    return DecoderModel(cfg).eval()


def _encoder_batch():
    ids = torch.randint(1, 45, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3:] = False
    return ids, mask, torch.randint(0, 2, (3, 11))


def _prefill(model: DecoderModel, ids: torch.Tensor, capacity: int):
    """Run the prompt through PyTorch; return the last logits and the cache as (k, v) tensors per layer."""
    cache = model.new_cache(ids.shape[0], capacity)
    with torch.no_grad():
        logits = model(ids, cache=cache)
    P = ids.shape[1]
    return logits, [t for c in cache for t in (c.k[:, :, :P], c.v[:, :, :P])]


def test_torch_export_encoder_matches_eager_on_new_shapes():
    model = _encoder()
    program = export_encoder(model)
    ids, mask, segments = _encoder_batch()  # other batch and length than the example
    with torch.no_grad():
        want = model(ids, key_padding=mask, segments=segments)
    got = program.module()(ids, mask, segments)
    assert (got - want)[mask].abs().max() <= 1e-5


def test_torch_export_decoder_step_matches_cached_eager_step():
    model = _decoder()
    ids = torch.randint(0, 41, (3, 8))
    _, past = _prefill(model, ids[:, :7], 24)
    cache = model.new_cache(3, 24)
    with torch.no_grad():
        model(ids[:, :7], cache=cache)
        want = model(ids[:, 7:], cache=cache)
    logits, *present = export_decoder_step(model).module()(ids[:, 7:], *past)
    assert (logits - want).abs().max() <= 1e-5
    assert present[0].shape == (3, 4, 8, 8) and torch.allclose(present[0], cache[0].k[:, :, :8], atol=1e-6)


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="onnx not installed")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (torch.onnx dynamo exporter)")
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed")


def test_onnx_encoder_matches_pytorch(ort, tmp_path):
    model = _encoder()
    session = ort.InferenceSession(str(export_encoder_onnx(model, tmp_path / "encoder.onnx")))
    ids, mask, segments = _encoder_batch()
    with torch.no_grad():
        want = model(ids, key_padding=mask, segments=segments)
    (got,) = session.run(None, {"ids": ids.numpy(), "mask": mask.numpy(), "segments": segments.numpy()})
    assert (torch.from_numpy(got) - want)[mask].abs().max() <= 1e-4


def test_onnx_prefill_and_steps_generate_the_same_greedy_ids(ort, tmp_path):
    """Generation on ONNX alone (prefill graph, then one step graph per token) == qkv generate; logits <= 1e-4."""
    model = _decoder()
    prefill = ort.InferenceSession(str(export_decoder_prefill_onnx(model, tmp_path / "prefill.onnx")))
    step = ort.InferenceSession(str(export_decoder_step_onnx(model, tmp_path / "step.onnx")))
    names = [i.name for i in step.get_inputs()]
    assert names[0] == "ids" and len(names) == 1 + 2 * model.config.num_layers
    prompt = torch.randint(0, 41, (2, 5))
    want = generate(model, prompt, max_new_tokens=10)
    ref_cache = model.new_cache(2, 24)
    with torch.no_grad():
        ref = model(prompt, cache=ref_cache)
    logits, *past = prefill.run(None, {"ids": prompt.numpy()})
    worst = float(np.abs(logits - ref.numpy()).max())
    nxt = logits[:, -1].argmax(-1)[:, None]  # (B, 1)
    got = [nxt]
    for _ in range(9):
        logits, *past = step.run(None, {"ids": nxt, **dict(zip(names[1:], past, strict=True))})
        with torch.no_grad():
            ref = model(torch.from_numpy(nxt), cache=ref_cache)
        worst = max(worst, float(np.abs(logits - ref.numpy()).max()))
        nxt = logits[:, -1].argmax(-1)[:, None]
        got.append(nxt)
    assert worst <= 1e-4
    assert torch.equal(torch.from_numpy(np.concatenate(got, axis=1)), want)


def test_onnx_seq2seq_greedy_equals_uncached_pytorch(ort, tmp_path):
    """BART's encoder + first + step graphs on onnxruntime == qkv's uncached decode (ids equal, logits <= 1e-4).

    (BART: offset learned positions and embedding LayerNorm; Marian exports the same way, ~10 s more.)
    """
    transformers = pytest.importorskip("transformers")
    folder, _ = hf_builders.bart(transformers, tmp_path / "hf")
    model, _ = load_pretrained(folder)
    sessions = {k: ort.InferenceSession(str(p)) for k, p in export_seq2seq_onnx(model, tmp_path / "onnx").items()}
    src = torch.randint(3, 59, (3, 9))
    src_mask = torch.ones(3, 9, dtype=torch.bool)
    src_mask[1, 5:] = False
    (memory,) = sessions["encoder"].run(None, {"src": src.numpy(), "src_mask": src_mask.numpy()})
    with torch.no_grad():
        ref_memory = model.encode(src, src_mask)
    assert np.abs(memory - ref_memory.numpy()).max() <= 1e-4
    tgt = torch.full((3, 1), model.bos_id)
    feeds = {"ids": tgt.numpy(), "memory": memory, "src_mask": src_mask.numpy()}
    logits, *past = sessions["decoder_first"].run(None, feeds)
    step_names = [i.name for i in sessions["decoder_step"].get_inputs()][3:]
    worst = 0.0
    for _ in range(8):
        with torch.no_grad():
            ref = model.decode(tgt, ref_memory, src_mask)[:, -1]  # uncached reference
        worst = max(worst, float(np.abs(logits[:, -1] - ref.numpy()).max()))
        nxt = logits[:, -1].argmax(-1)[:, None]
        assert torch.equal(torch.from_numpy(nxt)[:, 0], ref.argmax(-1))
        tgt = torch.cat([tgt, torch.from_numpy(nxt)], dim=1)
        feeds = {"ids": nxt, "memory": memory, "src_mask": src_mask.numpy(), **dict(zip(step_names, past, strict=True))}
        logits, *past = sessions["decoder_step"].run(None, feeds)
    assert worst <= 1e-4
