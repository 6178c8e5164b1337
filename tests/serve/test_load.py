"""Concurrency and faults against a real server on 127.0.0.1: batching happens (counted, not timed), and a
mixed load with disconnects and malformed requests leaves every good answer right and memory flat."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from qkv.generation import generate
from qkv.recipes import load_run
from tests.serve.runs import LiveServer

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="qkv serve needs the serve extra")
from qkv.serve import create_app  # noqa: E402

PROMPTS = ["to be", "or not", "café ", "the question", "naïve", "日本"]


def references(run, max_tokens=16):
    """Greedy and seeded-sampling continuations of each prompt, decoded alone in-process."""
    tok, out = run.tokenizer, {}
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([tok.encode(p)])
        out[("greedy", p)] = tok.decode(generate(run.model, ids, max_new_tokens=max_tokens)[0].tolist())
        sampled = generate(run.model, ids, max_new_tokens=max_tokens, strategy="sample", temperature=0.9, seed=i)
        out[("sample", p)] = tok.decode(sampled[0].tolist())
    return out


def test_concurrent_clients_are_batched_and_get_their_own_answers(lm_dir):
    run = load_run(lm_dir)
    refs = references(run)
    app = create_app(run, max_batch=16)
    barrier = threading.Barrier(8)

    def client(i):
        p = PROMPTS[i % len(PROMPTS)]
        with httpx.Client(base_url=server.url, timeout=60) as c:
            barrier.wait()
            text = c.post("/v1/completions", json={"prompt": p, "max_tokens": 16, "temperature": 0}).json()
        return refs[("greedy", p)], text["choices"][0]["text"]

    with LiveServer(app) as server:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(client, range(8)))
        stats = httpx.get(server.url + "/v1/stats").json()
    assert all(ref == got for ref, got in results)
    assert stats["max_rows"] > 1 and stats["rows_stepped"] > stats["steps"]  # several requests per model call
    assert stats["finished"] == {"length": 8}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def start_server(run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "serve", str(run_dir), "--port", "0", "--device", "cpu",
                             "--max-batch", "16", "--queue-size", "256"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "qkv serve: lm model at http://127.0.0.1:PORT/ ..."
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.split(" at ")[1].split("/ ")[0].rstrip("/")


def one_request(client, i):
    """Request ``i`` of the mixed load: returns (kind, passed, detail)."""
    p, kind = PROMPTS[i % len(PROMPTS)], ["greedy", "stream", "sample", "logprobs", "attention", "malformed",
                                          "disconnect", "greedy", "beam", "unknown_field"][i % 10]
    if kind in ("malformed", "unknown_field"):
        body = b'{"prompt": "to be", "max_tokens": ' if kind == "malformed" else b'{"prompt": "x", "bogus": 1}'
        r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
        want = "body" if kind == "malformed" else "bogus"
        return kind, r.status_code == 400 and r.json()["error"]["param"] == want, r.text
    if kind == "disconnect":
        with client.stream("POST", "/v1/completions", json={"prompt": p, "max_tokens": 400, "stream": True}) as r:
            got = [line for _, line in zip(range(3), r.iter_lines(), strict=False)]
        return kind, r.status_code == 200 and got[0].startswith("data: {"), got
    seed = PROMPTS.index(p)
    body = {"prompt": p, "max_tokens": 16, "temperature": 0.9 if kind == "sample" else 0, "seed": seed}
    if kind == "stream":
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            lines = [line for line in r.iter_lines() if line]
        import json

        text = "".join(json.loads(x[6:])["choices"][0]["text"] for x in lines[:-1])
        return ("greedy", p), lines[-1] == "data: [DONE]", text
    if kind == "logprobs":
        body["logprobs"] = 2
    if kind == "attention":
        body["return_attention"] = {"head": "all"}
    if kind == "beam":
        body["num_beams"] = 2
    r = client.post("/v1/completions", json=body)
    choice = r.json()["choices"][0]
    complete = choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 16
    if kind == "attention":
        complete &= len(choice["attention"]["weights"]) == 16
    if kind == "logprobs":
        complete &= len(choice["logprobs"]["token_logprobs"]) == 16
    ref_kind = "sample" if kind == "sample" else "beam" if kind == "beam" else "greedy"
    return (ref_kind, p), r.status_code == 200 and complete, choice["text"]


def test_mixed_load_with_disconnects_and_bad_requests(lm_dir):
    run = load_run(lm_dir)
    refs = references(run)
    for p in PROMPTS:
        ids = torch.tensor([run.tokenizer.encode(p)])
        beam = generate(run.model, ids, max_new_tokens=16, strategy="beam", num_beams=2)[0].tolist()
        refs[("beam", p)] = run.tokenizer.decode(beam)
    proc, url = start_server(lm_dir)
    local = threading.local()

    def job(i):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        return one_request(local.client, i)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(job, range(60)))  # warm-up: allocator pools and caches reach their working size
            time.sleep(0.5)
            start_rss = rss_kib(proc.pid)
            t0 = time.monotonic()
            results = list(pool.map(job, range(200)))
            elapsed = time.monotonic() - t0
        time.sleep(0.5)
        end_rss = rss_kib(proc.pid)
        stats = httpx.get(url + "/v1/stats").json()
        after = httpx.post(url + "/v1/completions", json={"prompt": "to be", "max_tokens": 16, "temperature": 0})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    failures = [(k, detail) for k, ok, detail in results if not ok]
    assert not failures, failures[:5]
    wrong = [(k, refs[k], text) for k, ok, text in results if isinstance(k, tuple) and refs[k] != text]
    assert not wrong, wrong[:5]
    n_disconnect = sum(1 for k, _, _ in results if k == "disconnect")
    assert stats["finished"].get("cancelled", 0) >= n_disconnect  # warm-up disconnects are counted too
    assert stats["waiting"] == 0 and stats["max_rows"] > 1
    assert end_rss <= 1.10 * start_rss, (start_rss, end_rss)
    assert after.status_code == 200 and after.json()["choices"][0]["text"] == refs[("greedy", "to be")]
    print(f"\nload: 200 requests in {elapsed:.1f}s, RSS {start_rss} -> {end_rss} KiB, stats {stats}")
