"""Greedy, sampling and beam search: invariants between strategies, EOS handling, streaming."""

from __future__ import annotations

import itertools

import pytest
import torch

from qkv.generation import (
    DecoderStepper,
    beam_search,
    generate,
    gnmt_length_penalty,
    iter_tokens,
    stream_generate,
    stream_translate,
    translate,
)
from tests.generation import tiny

EOS = 4


class CountingModel(torch.nn.Module):
    """Wraps a DecoderModel and records the batch size of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.batches = model, []
        self.config = model.config

    def forward(self, ids, **kw):
        self.batches.append(ids.shape[0])
        return self.model(ids, **kw)

    def new_cache(self, *a):
        return self.model.new_cache(*a)


def _pick_eos(model, ids, kp=None, T: int = 12) -> int:
    """A token to use as EOS so that rows end early and at different steps (robust to the model's init).

    Among the tokens greedy decoding (without EOS) emits, take the one that ends the most rows after
    step 0, with the most distinct end steps.
    """
    out = generate(model, ids, key_padding=kp, max_new_tokens=T).tolist()

    def score(c: int) -> tuple[int, int]:
        ends = [row.index(c) for row in out if c in row]
        return sum(e >= 1 for e in ends), len(set(ends))

    best = max({t for row in out for t in row}, key=score)
    assert score(best)[0] >= 1, out
    return best


def _until_eos(row: torch.Tensor, eos: int) -> list[int]:
    out = []
    for t in row.tolist():
        out.append(t)
        if t == eos:
            break
    return out


@pytest.mark.parametrize(("alpha", "early"), [(0.0, False), (0.6, True), (1.0, True)])
def test_beam_size_one_equals_greedy_decoder(alpha, early):
    model = tiny.sharpen(tiny.decoder(vocab=9))
    ids, kp = tiny.left_pad([[1, 2, 3, 5], [6, 7], [8, 1, 2]])
    eos = _pick_eos(model, ids, kp)
    greedy = generate(model, ids, key_padding=kp, max_new_tokens=12, eos_id=eos)
    beam = generate(model, ids, key_padding=kp, max_new_tokens=12, eos_id=eos, strategy="beam", num_beams=1,
                    length_penalty=alpha, early_stopping=early)
    assert torch.equal(greedy, beam)
    assert bool((greedy == eos).any()), "the test should exercise EOS"


@pytest.mark.parametrize("family", ["seq2seq", "rnn"])
def test_beam_size_one_equals_greedy_translate(family):
    model = tiny.sharpen(tiny.seq2seq(vocab=9) if family == "seq2seq" else tiny.rnn(vocab=9))
    src = torch.randint(5, 9, (4, 6))
    src[2, 4:] = 0
    greedy = translate(model, src, max_len=10, bos_id=1, eos_id=EOS)
    beam = translate(model, src, max_len=10, bos_id=1, eos_id=EOS, strategy="beam", num_beams=1,
                     length_penalty=0.0)
    assert torch.equal(greedy, beam)


def _exhaustive(model, prompt: torch.Tensor, V: int, T: int, alpha: float) -> tuple[float, list[int]]:
    """Best ``log P(y | prompt) / lp(|y|)`` over every y: ending in EOS, or of length T."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=T)))  # (V^T, T)
    full = torch.cat([prompt.expand(len(seqs), -1), seqs], dim=1)
    with torch.no_grad():
        logp = model(full).log_softmax(-1)[:, prompt.shape[1] - 1 : -1]  # (V^T, T, V)
    tok_logp = logp.gather(2, seqs[:, :, None]).squeeze(2).double().cumsum(1)  # (V^T, T)
    best, best_seq = float("-inf"), None
    for i, s in enumerate(seqs.tolist()):
        for n in range(1, T + 1):
            if EOS in s[: n - 1]:
                break
            if s[n - 1] == EOS or n == T:
                score = tok_logp[i, n - 1].item() / gnmt_length_penalty(n, alpha)
                if score > best:
                    best, best_seq = score, s[:n]
    return best, best_seq


@pytest.mark.parametrize(("T", "K"), [(2, 5), (3, 5 * 4), (4, 5 * 4 * 4)])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_finds_the_exhaustive_optimum(T, K, alpha):
    """Vocabulary 5. A beam as wide as the vocabulary is exact for T <= 2; for longer outputs the beam
    must hold every live prefix (V (V-1)^(T-2) candidates) to be exact, and then it is."""
    V = 5
    model = tiny.sharpen(tiny.decoder(vocab=V, max_len=16), 2.0)
    prompts = torch.tensor([[1, 2, 3], [3, 3, 1], [2, 0, 1]])
    with torch.no_grad():
        stepper = DecoderStepper(model, prompts, max_new_tokens=T, rows=3 * K)
        tokens, scores = beam_search(stepper, num_beams=K, max_new_tokens=T, eos_id=EOS, length_penalty=alpha,
                                     pad_id=-1)
    for b in range(3):
        want_score, want_seq = _exhaustive(model, prompts[b : b + 1], V, T, alpha)
        got = [t for t in tokens[b].tolist() if t != -1]
        assert got == want_seq, (b, got, want_seq)
        assert abs(scores[b].item() - want_score) <= 1e-4


def test_top_k_one_sampling_equals_greedy():
    model = tiny.decoder()
    ids = torch.randint(1, 13, (3, 5))
    greedy = generate(model, ids, max_new_tokens=15)
    sampled = generate(model, ids, max_new_tokens=15, strategy="sample", top_k=1, temperature=1.7, seed=3)
    assert torch.equal(greedy, sampled)


def test_same_seed_same_samples():
    model = tiny.decoder()
    ids = torch.randint(1, 13, (3, 5))
    kw = dict(max_new_tokens=20, strategy="sample", top_p=0.9, temperature=1.2, eos_id=EOS)
    a = generate(model, ids, seed=7, **kw)
    b = generate(model, ids, generator=torch.Generator().manual_seed(7), **kw)
    c = generate(model, ids, seed=8, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class _FixedLogits:
    """A stepper whose next-token distribution is always ``probs``."""

    def __init__(self, probs: list[float], rows: int):
        self.logits, self.batch_size = torch.tensor(probs).log().expand(rows, -1), rows

    def start(self):
        return self.logits[: self.batch_size]

    def step(self, tokens):
        return self.logits[: tokens.shape[0]]

    def select(self, index):
        self.batch_size = index.shape[0]


def test_sampling_follows_the_shaped_distribution():
    """20k draws: frequencies match the (top-p / temperature shaped) distribution within 4 sigma."""
    probs = [0.4, 0.3, 0.2, 0.1]
    n = 20000
    cases = {
        (1.0, None): torch.tensor(probs),
        (1.0, 0.65): torch.tensor([0.4, 0.3, 0.0, 0.0]) / 0.7,
        (0.5, None): torch.tensor(probs) ** 2 / (torch.tensor(probs) ** 2).sum(),
    }
    for (temp, top_p), want in cases.items():
        steps = iter_tokens(_FixedLogits(probs, n), max_new_tokens=1, sample=True,
                            settings=__import__("qkv").generation.LogitsSettings(temp, None, top_p),
                            generator=torch.Generator().manual_seed(0))
        tokens = next(steps).tokens
        freq = torch.bincount(tokens, minlength=4).double() / n
        sigma = (want.double() * (1 - want.double()) / n).sqrt()
        assert bool(((freq - want).abs() <= 4 * sigma + 1e-9).all()), (temp, top_p, freq, want)


def test_finished_rows_are_padded_dropped_and_match_solo_decoding():
    model = CountingModel(tiny.sharpen(tiny.decoder(vocab=9)))
    prompts = [[1, 2, 3, 5], [6, 7], [8, 1, 2], [5, 5, 6]]
    ids, kp = tiny.left_pad(prompts)
    eos = _pick_eos(model.model, ids, kp)
    out = generate(model, ids, key_padding=kp, max_new_tokens=12, eos_id=eos, pad_id=-1)
    lengths = [len(_until_eos(r, eos)) for r in out]
    assert min(lengths) < 12, "some row should finish early"
    for b, p in enumerate(prompts):
        row = out[b].tolist()
        assert row[lengths[b]:] == [-1] * (out.shape[1] - lengths[b])
        solo = generate(model.model, torch.tensor(p), max_new_tokens=12, eos_id=eos, pad_id=-1)
        assert row[: lengths[b]] == solo.tolist()[: lengths[b]]
    # batch sizes of the forward calls of the batched run: they fall as rows finish
    batched = model.batches[: max(lengths)]
    assert batched[0] == 4 and batched == sorted(batched, reverse=True) and batched[-1] < 4


def test_min_new_tokens_and_force_eos():
    model = tiny.sharpen(tiny.decoder(vocab=9))
    ids = torch.tensor([[1, 2, 3, 5], [6, 7, 7, 8], [8, 1, 2, 2]])
    eos = _pick_eos(model, ids)
    free = generate(model, ids, max_new_tokens=10, eos_id=eos)
    assert min(len(_until_eos(r, eos)) for r in free) < 6
    held = generate(model, ids, max_new_tokens=10, eos_id=eos, min_new_tokens=6)
    assert not bool((held[:, :6] == eos).any())
    forced = generate(model, ids, max_new_tokens=2, eos_id=eos, force_eos=True, pad_id=-1)
    assert all(r.tolist()[-1] == eos for r in forced)


def test_repetition_penalty_matches_a_reference_loop():
    """CTRL penalty over prompt + generated tokens, checked against a plain full-recompute loop."""
    model = tiny.decoder(vocab=13)
    ids = torch.randint(1, 13, (2, 4))
    got = generate(model, ids, max_new_tokens=10, repetition_penalty=3.0)
    seq = ids.clone()
    with torch.no_grad():
        for _ in range(10):
            logits = model(seq)[:, -1].clone()
            for b in range(2):
                for tok in set(seq[b].tolist()):
                    x = logits[b, tok]
                    logits[b, tok] = x / 3.0 if x > 0 else x * 3.0
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, seq[:, 4:])
    assert not torch.equal(got, generate(model, ids, max_new_tokens=10))


def test_streaming_matches_generate_and_translate():
    model = tiny.decoder()
    ids = torch.randint(1, 13, (2, 5))
    want = generate(model, ids, max_new_tokens=8, eos_id=EOS, pad_id=-1)
    got = torch.full_like(want, -1)
    seen = []
    for st in stream_generate(model, ids, max_new_tokens=8, eos_id=EOS):
        got[st.rows, st.step] = st.tokens
    generate(model, ids, max_new_tokens=8, eos_id=EOS, on_token=seen.append)
    assert torch.equal(got, want) and len(seen) == want.shape[1]
    s2s = tiny.seq2seq()
    src = torch.randint(1, 13, (2, 6))
    want = translate(s2s, src, max_len=7, bos_id=1, eos_id=EOS, pad_id=0)
    got = torch.zeros_like(want)
    for st in stream_translate(s2s, src, max_len=7, bos_id=1, eos_id=EOS, pad_id=0):
        got[st.rows, st.step] = st.tokens
    assert torch.equal(got, want)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_translate_batch_equals_solo(strategy):
    model = tiny.sharpen(tiny.seq2seq(vocab=9))
    src = torch.randint(5, 9, (3, 6))
    src[1, 3:] = 0
    out = translate(model, src, max_len=9, bos_id=1, eos_id=EOS, pad_id=0, strategy=strategy, num_beams=3)
    for b in range(3):
        real = src[b][src[b] != 0]
        solo = translate(model, real, max_len=9, bos_id=1, eos_id=EOS, pad_id=0, strategy=strategy, num_beams=3)
        assert _until_eos(out[b], EOS) == _until_eos(solo, EOS)


def test_beam_slots_keep_children_in_their_parents_rows():
    """The first child of each parent stays in the parent's slot, so its cache row is not copied."""
    from qkv.generation.decode import _assign_slots

    parent = torch.tensor([[2, 2, 0, 1], [3, 3, 3, 3], [0, 1, 2, 3], [1, 0, 1, 0]])
    perm = _assign_slots(parent)
    assert torch.equal(perm.sort(1).values, torch.arange(4).expand(4, 4))  # a permutation per row
    slot_parent = parent.gather(1, perm)  # the parent of the child now in each slot
    for b in range(4):
        for p in set(parent[b].tolist()):
            assert slot_parent[b, p] == p, (b, p, slot_parent[b])
    # copies needed = slots whose child comes from another row = K - number of distinct parents
    copies = (slot_parent != torch.arange(4)).sum(1).tolist()
    assert copies == [1, 3, 0, 2]


def test_generate_points_encoder_decoders_to_translate():
    with pytest.raises(ValueError, match="translate"):
        generate(tiny.seq2seq(), torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)


def test_outputs_are_normal_tensors_usable_in_training():
    """Decoding runs in inference mode, but what it returns can feed a model that is being trained."""
    model = tiny.decoder()
    out = generate(model, torch.randint(1, 13, (2, 3)), max_new_tokens=4)
    streamed = next(stream_generate(model, torch.randint(1, 13, (2, 3)), max_new_tokens=4)).tokens
    assert not out.is_inference() and not streamed.is_inference()
    model.train()
    model(out).sum().backward()
    assert model.embed.token.embed.weight.grad is not None


class _SourceStepper:
    """A stepper whose rows know their source: source 0 wants EOS (id 4) at once, the others never emit it."""

    def __init__(self, B: int):
        self.src, self.batches = torch.arange(B), []

    @property
    def batch_size(self):
        return self.src.shape[0]

    def start(self):
        logp = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.2]).log().expand(self.batch_size, -1).clone()
        logp[self.src == 0, 4] = 5.0
        logp[self.src != 0, 4] = float("-inf")
        return logp

    def step(self, tokens):
        self.batches.append(tokens.shape[0])
        return self.start()

    def select(self, index):
        self.src = self.src[index]


def test_beam_search_drops_finished_sources():
    stepper = _SourceStepper(3)
    tokens, _ = beam_search(stepper, num_beams=2, max_new_tokens=6, eos_id=4, early_stopping=True, pad_id=-1)
    assert stepper.batches[0] == 6 and stepper.batches[-1] == 4, stepper.batches  # source 0 left the batch
    assert tokens[0].tolist()[0] == 4 and 4 not in tokens[1:].tolist()
