"""load_pretrained on folders written by transformers: same logits (<= 1e-4) and the same greedy ids."""

from __future__ import annotations

import pytest
import torch

from qkv.functional.positional import sinusoidal_table
from qkv.generation import generate, translate
from qkv.interop import PretrainedSeq2Seq, from_transformers, load_pretrained
from qkv.models import DecoderModel, EncoderModel
from tests.interop import hf_builders

transformers = pytest.importorskip("transformers")


def test_gpt2_logits_cache_and_greedy_ids(tmp_path):
    folder, hf = hf_builders.gpt2(transformers, tmp_path)
    model, tokenizer = load_pretrained(folder)
    assert isinstance(model, DecoderModel) and tokenizer is None and not model.training
    ids = torch.randint(0, 53, (3, 20))
    with torch.no_grad():
        want = hf(ids).logits
        got = model(ids)
    assert (got - want).abs().max() <= 1e-4
    prompt = ids[:, :4]
    ours = generate(model, prompt, max_new_tokens=12, eos_id=5, pad_id=0)
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                         num_beams=1, eos_token_id=5, pad_token_id=0)[:, 4:]
    assert torch.equal(ours, theirs)


def test_bert_hidden_states_with_padding(tmp_path):
    folder, hf = hf_builders.bert(transformers, tmp_path)
    model, _ = load_pretrained(folder)
    assert isinstance(model, EncoderModel)
    ids = torch.randint(1, 57, (3, 20))
    segments = torch.randint(0, 2, (3, 20))
    real = torch.ones(3, 20, dtype=torch.bool)
    real[1, 15:] = False
    real[2, 7:] = False
    with torch.no_grad():
        want = hf(ids, attention_mask=real.long(), token_type_ids=segments).last_hidden_state
        got = model(ids, key_padding=real, segments=segments)
    assert (got - want)[real].abs().max() <= 1e-4


def _seq2seq_batch(pad: int):
    src = torch.randint(3, 59, (3, 11))
    src[1, 7:] = pad
    src[2, 4:] = pad
    return src, src != pad, torch.randint(3, 59, (3, 9))


@pytest.mark.parametrize("kind", ["bart", "marian"])
def test_seq2seq_logits_and_greedy_translation(tmp_path, kind):
    folder, hf = getattr(hf_builders, kind)(transformers, tmp_path)
    model, _ = load_pretrained(folder)
    assert isinstance(model, PretrainedSeq2Seq) and model.model_type == kind
    pad, start = hf.config.pad_token_id, hf.config.decoder_start_token_id
    src, mask, tgt = _seq2seq_batch(pad)
    tgt[:, 0] = start
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        got = model(src, tgt, mask)
    assert (got - want).abs().max() <= 1e-4
    ours = translate(model, src, mask, max_len=12)
    theirs = hf.generate(src, attention_mask=mask.long(), max_new_tokens=12, do_sample=False, num_beams=1)
    assert torch.equal(ours, theirs[:, 1:])  # HF keeps the decoder start token


def test_marian_positions_are_split_sinusoids(tmp_path):
    """The table Marian computes (sines then cosines) is what qkv rebuilds, row for row."""
    folder, hf = hf_builders.marian(transformers, tmp_path)
    model, _ = load_pretrained(folder)
    theirs = hf.model.encoder.embed_positions.weight
    assert (model.src_embed.position.table - theirs).abs().max() <= 1e-6
    interleaved = sinusoidal_table(theirs.shape[0], theirs.shape[1])  # the paper's layout
    assert (interleaved - theirs).abs().max() > 0.5  # so the layout matters


def test_bart_learned_positions_use_offset_two(tmp_path):
    """Shifting BART's table by one row must change the logits: the offset is exercised."""
    folder, hf = hf_builders.bart(transformers, tmp_path)
    model, _ = load_pretrained(folder)
    src, mask, tgt = _seq2seq_batch(1)
    with torch.no_grad():
        want = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        model.src_embed.position.offset = 1
        assert (model(src, tgt, mask) - want).abs().max() > 1e-3


def test_bert_with_new_head_fine_tunes(tmp_path):
    """num_classes adds a fresh head; the loaded encoder trains (loss falls) and its weights move."""
    folder, hf = hf_builders.bert(transformers, tmp_path)
    model, _ = load_pretrained(folder, num_classes=2)
    assert torch.equal(model.embed.token.weight, hf.embeddings.word_embeddings.weight)
    ids = torch.randint(3, 57, (8, 10))
    labels = torch.arange(8) % 2
    ids[:, 1] = 1 + labels  # the label is visible in token 1
    before = model.encoder.layers[0].self_attn.in_proj.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model.classify(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.encoder.layers[0].self_attn.in_proj.weight.detach(), before)
    with pytest.raises(ValueError, match="needs an encoder checkpoint"):
        load_pretrained(hf_builders.gpt2(transformers, tmp_path / "gpt2")[0], num_classes=2)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "bart", "marian"])
def test_from_transformers_equals_loading_the_saved_folder(tmp_path, kind):
    folder, hf = getattr(hf_builders, kind)(transformers, tmp_path)
    from_memory, from_disk = from_transformers(hf), load_pretrained(folder)[0]
    assert type(from_memory) is type(from_disk)
    for (name, a), b in zip(from_memory.state_dict().items(), from_disk.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
