"""Bad input: each answered by a 4xx OpenAI error object naming the field; the server keeps serving."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qkv.cli import main

testclient = pytest.importorskip("fastapi.testclient", reason="qkv serve needs the serve extra")
from qkv.serve import create_app  # noqa: E402

GOOD = {"prompt": "3 mars 2019", "max_tokens": 5, "temperature": 0}


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({**GOOD, "frobnicate": 1}, "frobnicate", 400),
        ({**GOOD, "max_tokens": "5"}, "max_tokens", 400),
        ({**GOOD, "max_tokens": 0}, "max_tokens", 400),
        ({**GOOD, "max_tokens": -3}, "max_tokens", 400),
        ({**GOOD, "max_tokens": 10**6}, "max_tokens", 400),
        ({**GOOD, "prompt": ""}, "prompt", 400),
        ({**GOOD, "prompt": "x" * 30_000}, "prompt", 400),
        ({**GOOD, "prompt": "3 mars 2019 " * 200}, "prompt", 400),
        ({**GOOD, "prompt": ["a", "b"]}, "prompt", 400),
        ({"max_tokens": 5}, "prompt", 400),
        ({**GOOD, "temperature": -1}, "temperature", 400),
        ({**GOOD, "top_p": 0}, "top_p", 400),
        ({**GOOD, "top_k": 0}, "top_k", 400),
        ({**GOOD, "stream": "yes"}, "stream", 400),
        ({**GOOD, "logprobs": 9}, "logprobs", 400),
        ({**GOOD, "return_attention": {"layer": 7}}, "return_attention.layer", 400),
        ({**GOOD, "return_attention": {"head": 99}}, "return_attention.head", 400),
        ({**GOOD, "return_attention": {"head": "max"}}, "return_attention.head", 400),
        ({**GOOD, "return_attention": "yes"}, "return_attention", 400),
        ({**GOOD, "return_attention": True, "num_beams": 2}, "return_attention", 400),
        ({**GOOD, "num_beams": 0}, "num_beams", 400),
        ({**GOOD, "model": "gpt-4"}, "model", 404),
    ],
)
def test_bad_completion_fields_are_named(mt, body, param, status):
    r = mt.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"], err


def test_malformed_json_and_wrong_body_types(mt):
    r = mt.post("/v1/completions", content=b'{"prompt": "3 mars', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = mt.post("/v1/completions", json=["prompt"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = mt.post("/v1/completions", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_classify_on_a_translator_and_completion_on_an_encoder(mt, enc):
    for path in ("/v1/classify", "/v1/embeddings"):
        r = mt.post(path, json={"input": "hello"})
        assert r.status_code == 400 and "cannot classify" in r.json()["error"]["message"]
    r = enc.post("/v1/completions", json=GOOD)
    assert r.status_code == 400 and "encoder" in r.json()["error"]["message"]
    for body, param in (({"input": []}, "input"), ({"input": [""]}, "input"), ({"input": 3}, "input"),
                        ({"input": "a", "x": 1}, "x")):
        r = enc.post("/v1/classify", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_unknown_route_and_server_still_answers(mt):
    assert mt.get("/v1/nothing").status_code == 404
    assert mt.get("/v1/models").status_code == 200
    assert mt.post("/v1/completions", json=GOOD).json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_full_queue_answers_503(lm_dir):
    app = create_app(lm_dir, queue_size=1)
    with testclient.TestClient(app) as client:
        app.state.engine.stop()  # no engine thread: the one queued request stays queued
        with client.stream("POST", "/v1/completions", json={"prompt": "to be", "max_tokens": 3, "stream": True}) as first:
            assert first.status_code == 200
            r = client.post("/v1/completions", json={"prompt": "to be", "max_tokens": 3})
            assert r.status_code == 503 and r.json()["error"]["type"] == "server_busy"
            first.close()


def test_timeout_answers_504(lm_dir):
    with testclient.TestClient(create_app(lm_dir, timeout=0.001)) as client:
        r = client.post("/v1/completions", json={"prompt": "to be", "max_tokens": 40})
        assert r.status_code == 504 and "timeout" in r.json()["error"]["message"]


def test_cli_serve_bad_input_is_one_line_exit_2(capsys, monkeypatch, tmp_path):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkv serve: error:") and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    monkeypatch.delitem(sys.modules, "qkv.serve.server", raising=False)
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'qkv[serve]'" in err and len(err.strip().splitlines()) == 1


def test_qkv_imports_without_the_serve_extra():
    code = "import sys, qkv, qkv.cli.main, qkv.generation, qkv.recipes\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'uvicorn', 'starlette', 'qkv.serve'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
