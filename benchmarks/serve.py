"""``qkv serve`` under concurrent streaming clients vs the same model decoding one request at a time in-process.

Question: with 16 concurrent streaming clients, does the server's per-step batching give at least 3x the total
tokens/s of one client (and of in-process decoding one request at a time), for the dates translator and the
Shakespeare character LM? Also: p50/p95 request latency and time to first token per concurrency level.

The server runs as ``python -m qkv serve RUN --port 0`` in a subprocess on 127.0.0.1 (one torch thread,
``--max-batch 16``); clients are threads here, each with its own HTTP connection, sending greedy streaming
requests back to back (closed loop) until the level's request count is done. Every streamed text is checked
against the in-process greedy decode of the same prompt. Levels run in the order 1, 4, 16, 16, 4, 1 (so load
from other processes hits them alike); tokens/s is the median of the two rounds, latencies pool both.

Run: ``python benchmarks/serve.py [--mt RUN] [--lm RUN] [--quick]``; without run directories it trains a
dates translator and a Shakespeare char LM for ``--train-seconds`` each (into runs/bench-serve-*).
Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

from qkv.data import synthetic  # noqa: E402
from qkv.data.parallel import source_batch  # noqa: E402
from qkv.generation import stream_generate, stream_translate  # noqa: E402
from qkv.recipes import load_recipe, load_run, train  # noqa: E402
from qkv.recipes.demo import demo_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@dataclass(frozen=True)
class Case:
    model: str  # "dates translator" or "shakespeare char LM"
    clients: int
    requests: int
    max_tokens: int


def train_runs(seconds: float) -> tuple[Path, Path]:
    """A dates translator and a char LM trained for about ``seconds`` each."""
    mt = ROOT / "runs" / "bench-serve-dates"
    train(demo_recipe(out_dir=str(mt), time_limit=seconds, n_train=20000, n_test=200), overwrite=True)
    lm = ROOT / "runs" / "bench-serve-shakespeare"
    overrides = [f"out_dir={lm}", f"train.time_limit={seconds}", "train.eval_every=100000",
                 f"data.train={SHAKESPEARE}"]
    train(load_recipe(ROOT / "configs" / "shakespeare_char.yaml", overrides), overwrite=True)
    return mt, lm


def prompts(task: str, n: int) -> list[str]:
    if task == "translation":
        return [s for s, _ in synthetic.date_pairs(n, seed=123)]
    lines = [x.strip() for x in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if 8 <= len(x.strip()) <= 24]
    return lines[:n]


def in_process(run, texts: list[str], max_tokens: int) -> tuple[list[str], dict[str, float]]:
    """Greedy-decode each text alone, streaming as the CLI does; texts and tokens/s / latency figures."""
    outs, latencies, tokens = [], [], 0
    t_all = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        if run.task == "translation":
            tgt = run.tokenizer.target
            src, mask = source_batch([text], run.tokenizer.source)
            steps = stream_translate(run.model, src, mask, max_len=max_tokens, bos_id=tgt.bos_id,
                                     eos_id=tgt.eos_id, pad_id=tgt.pad_id)
            ids = [int(st.tokens[0]) for st in steps]
            outs.append(tgt.decode(ids))
        else:
            ids = [int(st.tokens[0]) for st in stream_generate(run.model, torch.tensor([run.tokenizer.encode(text)]),
                                                               max_new_tokens=max_tokens)]
            outs.append(run.tokenizer.decode(ids))
        latencies.append(time.perf_counter() - t0)
        tokens += len(ids)
    wall = time.perf_counter() - t_all
    return outs, {"tokens_per_s": tokens / wall, "p50_s": quantile(latencies, 0.5), "p95_s": quantile(latencies, 0.95)}


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def start_server(run_dir: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "serve", str(run_dir), "--port", "0", "--device", "cpu",
                             "--max-batch", "16", "--queue-size", "256"], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise RuntimeError(f"qkv serve did not start: {line!r}")
    return proc, line.split(" at ")[1].split("/ ")[0].rstrip("/")


def stream_one(conn: http.client.HTTPConnection, text: str, max_tokens: int) -> tuple[str, int, float, float]:
    """One streaming request on a kept-alive connection: (text, completion tokens, latency s, first token s).

    The standard library's client keeps the clients' own CPU cost small: they share the CPU with the server.
    """
    t0, first, pieces, usage = time.perf_counter(), None, [], None
    body = json.dumps({"prompt": text, "max_tokens": max_tokens, "temperature": 0, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    while line := r.readline():
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(chunk["choices"][0]["text"])
        usage = chunk.get("usage", usage)
    return "".join(pieces), usage["completion_tokens"], time.perf_counter() - t0, first or 0.0


def client_level(address: tuple[str, int], texts: list[str], refs: list[str], case: Case) -> dict:
    """``case.clients`` threads send ``case.requests`` requests back to back; figures and mismatches."""
    counter, lock = iter(range(case.requests)), threading.Lock()

    def worker(_):
        conn, done = http.client.HTTPConnection(*address, timeout=120), []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                conn.close()
                return done
            k = i % len(texts)
            out, n, lat, ttft = stream_one(conn, texts[k], case.max_tokens)
            done.append((out == refs[k], n, lat, ttft))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(case.clients) as pool:
        rows = [r for part in pool.map(worker, range(case.clients)) for r in part]
    wall = time.perf_counter() - t0
    return {"tokens_per_s": sum(r[1] for r in rows) / wall, "latencies": [r[2] for r in rows],
            "ttft": [r[3] for r in rows], "mismatches": sum(1 for r in rows if not r[0]), "wall_s": wall}


def bench_model(name: str, run_dir: Path, requests: int, max_tokens: int) -> list[dict]:
    run = load_run(run_dir)
    texts = prompts(run.task, 32)
    refs, base = in_process(run, texts[:16], max_tokens)
    refs, base = in_process(run, texts, max_tokens)  # the first pass warmed up; this one is timed
    proc, url = start_server(run_dir)
    host, port = url.split("//")[1].split(":")
    address = (host, int(port))
    try:
        conn = http.client.HTTPConnection(*address, timeout=120)
        for t in texts[:4]:  # warm-up: the server's first requests
            stream_one(conn, t, max_tokens)
        levels: dict[int, list[dict]] = {}
        for clients in (1, 4, 16, 16, 4, 1):
            case = Case(name, clients, requests, max_tokens)
            levels.setdefault(clients, []).append(client_level(address, texts, refs, case))
        conn = http.client.HTTPConnection(*address, timeout=120)  # the first one timed out while idle
        conn.request("GET", "/v1/stats")
        stats = json.loads(conn.getresponse().read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = [{"case": asdict(Case(name, 0, len(texts), max_tokens)), "mode": "in-process, one request at a time",
            **{k: round(v, 4) for k, v in base.items()}}]
    one = statistics.median(r["tokens_per_s"] for r in levels[1])
    for clients, runs in levels.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        lat = [x for r in runs for x in r["latencies"]]
        ttft = [x for r in runs for x in r["ttft"]]
        out.append({"case": asdict(Case(name, clients, requests, max_tokens)), "mode": "qkv serve, streaming",
                    "tokens_per_s": round(tps, 2), "tokens_per_s_rounds": [round(r["tokens_per_s"], 2) for r in runs],
                    "vs_1_client": round(tps / one, 2), "vs_in_process": round(tps / base["tokens_per_s"], 2),
                    "p50_s": round(quantile(lat, 0.5), 4), "p95_s": round(quantile(lat, 0.95), 4),
                    "ttft_p50_s": round(quantile(ttft, 0.5), 4),
                    "mismatches": sum(r["mismatches"] for r in runs)})
    out.append({"case": {"model": name}, "mode": "server stats", "stats": stats})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | clients | tokens/s | vs 1 client | vs in-process | p50 s | p95 s | first token p50 s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["case"]
        if r["mode"] == "in-process, one request at a time":
            lines.append(f"| {c['model']} | in-process, 1 at a time | {r['tokens_per_s']:.0f} | | 1.00 | "
                         f"{r['p50_s']:.3f} | {r['p95_s']:.3f} | |")
        elif r["mode"] == "qkv serve, streaming":
            lines.append(f"| {c['model']} | {c['clients']} | {r['tokens_per_s']:.0f} | {r['vs_1_client']:.2f} | "
                         f"{r['vs_in_process']:.2f} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['ttft_p50_s']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mt", type=Path, help="a dates translator run (default: train one)")
    parser.add_argument("--lm", type=Path, help="a Shakespeare char LM run (default: train one)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level and round")
    parser.add_argument("--quick", action="store_true", help="16 requests per level, 20 s of training")
    args, _ = parser.parse_known_args(argv)  # run_all passes every benchmark the same flags
    torch.set_num_threads(1)  # the in-process baseline runs on one thread, as the server does
    requests = 16 if args.quick else args.requests
    if args.mt is None or args.lm is None:
        mt, lm = train_runs(20.0 if args.quick else args.train_seconds)
        args.mt, args.lm = args.mt or mt, args.lm or lm
    rows = bench_model("dates translator", args.mt, requests, 12)
    rows += bench_model("shakespeare char LM", args.lm, requests, 40)
    print(table(rows))
    path = write_json("serve", {"command": "python benchmarks/serve.py " + " ".join(argv or sys.argv[1:]),
                                "note": "server and clients share this machine's CPU (and other processes run)",
                                "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
