"""BLEU by source length for several trained translators on one test set: a table, a plot and JSON.

The seeds' motivating claim: an RNN encoder-decoder that squeezes the source into one fixed vector gets
worse as sentences grow, and attention fixes that. Each run is decoded with its own recipe's settings
(beam size, length penalty), the test set is split into source-length buckets (whitespace words of the
German source), and corpus BLEU (sacrebleu, detokenised) is computed per bucket and system.

Run (after training the three Multi30k configs; ~1-3 minutes per system on 2 CPU cores)::

    python experiments/bleu_by_length.py \\
        --system "RNN, no attention=runs/multi30k-rnn-noattn" \\
        --system "RNN + attention=runs/multi30k-rnn" \\
        --system "Transformer=runs/multi30k-transformer" \\
        --plot docs/bleu_by_length.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qkv.data import read_aligned
from qkv.data.tokenizers import atomic_write_text
from qkv.evaluation import bleu_by_length, corpus_bleu, format_length_table, plot_bleu_by_length
from qkv.recipes import load_run
from qkv.recipes.run import decode_config
from qkv.recipes.translation import translate_texts

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
EDGES = (7, 9, 11, 13, 16)  # ~75-230 test_2016_flickr sentences per bucket


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", action="append", required=True, metavar="NAME=RUN",
                   help="a label and a run directory (repeat)")
    p.add_argument("--src", default=str(DATA / "test_2016_flickr.de.gz"))
    p.add_argument("--ref", default=str(DATA / "test_2016_flickr.en.gz"))
    p.add_argument("--edges", default=",".join(map(str, EDGES)), help="inclusive bucket upper bounds (words)")
    p.add_argument("--plot", default="docs/bleu_by_length.png")
    p.add_argument("--json", default="experiments/results/bleu_by_length.json")
    args = p.parse_args(argv)
    edges = tuple(int(e) for e in args.edges.split(","))
    src, ref = read_aligned(args.src, args.ref)
    rows, summary = {}, {}
    for item in args.system:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"--system expects NAME=RUN, got {item!r}")
        run = load_run(path, task="translation")
        start = time.perf_counter()
        hyps = translate_texts(run.model, run.tokenizer, src, decode_config(run))
        seconds = time.perf_counter() - start
        rows[name] = bleu_by_length(src, hyps, ref, edges=edges)
        bleu = corpus_bleu(hyps, ref)
        summary[name] = {"run": str(run.path), "bleu": bleu.score, "signature": str(bleu.signature),
                         "decode_seconds": seconds,
                         "buckets": [{"label": r.label, "n": r.count, "bleu": r.bleu} for r in rows[name]]}
        print(f"{name}: BLEU {bleu.score:.2f} ({run.path}, decoded in {seconds:.0f} s)", flush=True)
    print(format_length_table(rows))
    print(f"wrote {plot_bleu_by_length(rows, args.plot, title='Multi30k test_2016_flickr: BLEU by source length')}")
    print(f"wrote {atomic_write_text(args.json, json.dumps(summary, indent=2) + chr(10))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
