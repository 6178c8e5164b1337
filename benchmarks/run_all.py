"""``make bench``: run every benchmark script's main() in turn (pass --quick for a smoke run)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BENCHMARKS = ["attention", "short_attention", "models", "long_context", "generation", "training", "training_bound", "embeddings", "serve"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = [a for a in argv if not a.startswith("-")] or BENCHMARKS
    flags = [a for a in argv if a.startswith("-")]
    for name in wanted:
        if not (HERE / f"{name}.py").exists():
            print(f"== {name}: not written yet, skipped")
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(name).main(flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
