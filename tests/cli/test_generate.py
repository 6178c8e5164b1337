"""``qkv generate`` and ``qkv.generation.generate`` follow one policy past the context (the sliding window): with
the same seed and options the command prints what the Python API returns."""

from __future__ import annotations

import torch

from qkv.generation import context_length, generate
from qkv.recipes import load_run
from tests.cli.conftest import qkv


def test_cli_generate_past_the_context_is_the_python_api(lm_run_dir):
    run = load_run(lm_run_dir)
    C = context_length(run.model)
    prompts = ["to be", "that is the question. to be or not to be"]  # the second is longer than the context
    assert len(run.tokenizer.encode(prompts[1])) > C
    T = 3 * C
    res = qkv("generate", str(lm_run_dir), "--max-new-tokens", str(T), "--seed", "3", "--top-k", "5",
              "--temperature", "0.9", stdin="\n".join(prompts) + "\n")
    assert res.returncode == 0, res.stderr
    want = []
    for p in prompts:
        new = generate(run.model.eval(), torch.tensor(run.tokenizer.encode(p)), max_new_tokens=T, strategy="sample",
                       top_k=5, temperature=0.9, seed=3)
        assert new.shape == (T,)
        want.append(p + run.tokenizer.decode(new.tolist()))
    assert res.stdout == "".join(w + "\n" for w in want)  # the continuation may hold newlines itself
