"""The endpoints through FastAPI's TestClient: answers match qkv.generation decoding one request at a time."""

from __future__ import annotations

import json

import pytest
import torch

from qkv.generation import generate, translate
from qkv.recipes import load_run

pytest.importorskip("fastapi", reason="qkv serve needs the serve extra")


def stream_events(client, body):
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_models_lists_the_run(lm, lm_dir):
    data = lm.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == [lm_dir.name] and data[0]["task"] == "lm"


def test_lm_greedy_matches_generate(lm, lm_dir):
    run = load_run(lm_dir)
    prompt = "to be or"
    body = lm.post("/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0}).json()
    ids = torch.tensor([run.tokenizer.encode(prompt)])
    ref = generate(run.model, ids, max_new_tokens=12)[0].tolist()
    assert body["choices"][0]["text"] == run.tokenizer.decode(ref)
    assert body["usage"] == {"prompt_tokens": ids.shape[1], "completion_tokens": 12, "total_tokens": ids.shape[1] + 12}
    assert body["choices"][0]["finish_reason"] == "length"


def test_lm_seeded_sampling_matches_generate_and_streams_the_same_text(lm, lm_dir):
    run = load_run(lm_dir)
    req = {"prompt": "café ", "max_tokens": 30, "temperature": 1.3, "top_k": 50, "top_p": 0.95, "seed": 7}
    text = lm.post("/v1/completions", json=req).json()["choices"][0]["text"]
    ids = torch.tensor([run.tokenizer.encode("café ")])
    ref = generate(run.model, ids, max_new_tokens=30, strategy="sample", temperature=1.3, top_k=50, top_p=0.95,
                   seed=7)[0].tolist()
    assert text == run.tokenizer.decode(ref)
    chunks = stream_events(lm, req)
    pieces = [c["choices"][0]["text"] for c in chunks]
    assert "".join(pieces) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == 30


def test_translation_matches_translate_with_attention_and_logprobs(mt, mt_dir):
    run = load_run(mt_dir)
    req = {"prompt": "3 mars 2019", "max_tokens": 12, "temperature": 0, "logprobs": 2,
           "return_attention": {"layer": -1, "head": "all"}}
    choice = mt.post("/v1/completions", json=req).json()["choices"][0]
    from qkv.data.parallel import source_batch

    src, mask = source_batch(["3 mars 2019"], run.tokenizer.source)
    tgt = run.tokenizer.target
    ref = translate(run.model, src, mask, max_len=12, bos_id=tgt.bos_id, eos_id=tgt.eos_id, pad_id=tgt.pad_id)[0].tolist()
    assert choice["text"] == tgt.decode(ref)
    att = choice["attention"]
    assert att["kind"] == "cross" and att["layer"] == run.config.num_decoder_layers - 1
    assert len(att["keys"]) == src.shape[1] and len(att["weights"]) == len(choice["logprobs"]["tokens"])
    _, full = run.model(src, torch.tensor([[tgt.bos_id] + ref[:-1]]), mask, return_weights=True)
    ref_weights = full["cross"][-1][0].permute(1, 0, 2)  # (L, H, S): one row of heads per output token
    torch.testing.assert_close(torch.tensor(att["weights"]), ref_weights, atol=1e-4, rtol=0)
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(ref) and all(len(t) == 2 for t in lp["top_logprobs"])
    assert all(v <= 0 for v in lp["token_logprobs"])


def test_mean_head_and_stream_attention(mt):
    req = {"prompt": "March 3rd, 2019", "max_tokens": 6, "temperature": 0, "return_attention": True}
    whole = mt.post("/v1/completions", json=req).json()["choices"][0]["attention"]
    chunks = stream_events(mt, req)
    assert chunks[0]["choices"][0]["attention"]["keys"] == whole["keys"]
    streamed = [c["choices"][0]["attention"]["weights"] for c in chunks if "weights" in c["choices"][0].get("attention", {})]
    assert streamed == whole["weights"] and abs(sum(whole["weights"][0]) - 1) < 1e-3


def test_beam_search_matches_translate(mt, mt_dir):
    run = load_run(mt_dir)
    from qkv.data.parallel import source_batch

    src, mask = source_batch(["Sunday 03.03.19"], run.tokenizer.source)
    tgt = run.tokenizer.target
    ref = translate(run.model, src, mask, max_len=10, strategy="beam", num_beams=3, bos_id=tgt.bos_id,
                    eos_id=tgt.eos_id, pad_id=tgt.pad_id)[0].tolist()
    body = mt.post("/v1/completions", json={"prompt": "Sunday 03.03.19", "max_tokens": 10, "num_beams": 3}).json()
    assert body["choices"][0]["text"] == run.tokenizer.target.decode(ref)


def test_classify_and_embeddings(enc, enc_dir):
    run = load_run(enc_dir)
    from qkv.recipes.classify import embed, predict

    texts = ["good fine movie", "bad awful movie"]
    data = enc.post("/v1/classify", json={"input": texts}).json()["data"]
    names = run.extra["labels"]
    assert [d["label"] for d in data] == [names[i] for i in predict(run.model, run.tokenizer, texts)]
    assert all(abs(sum(d["probabilities"].values()) - 1) < 1e-4 for d in data)
    emb = enc.post("/v1/embeddings", json={"input": "good fine movie"}).json()
    torch.testing.assert_close(torch.tensor(emb["data"][0]["embedding"]), embed(run.model, run.tokenizer, texts[:1])[0],
                               atol=1e-5, rtol=0)


def test_playground_page_is_self_contained(mt, enc):
    import html
    import re

    for client, task in ((mt, "translation"), (enc, "classify")):
        r = client.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        assert "window.QkvHeatmap" in page and f'"task":"{task}"' in page  # the explorer's drawing code, reused
        assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://", page)  # nothing loaded from anywhere
        csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1))
        assert "connect-src 'self'" in csp and "default-src 'none'" in csp
