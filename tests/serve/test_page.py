"""The playground page in headless Chromium: type, tokens stream in, the heatmap grows; loopback only."""

from __future__ import annotations

import json
import tempfile
from urllib.parse import urlparse

import pytest

from tests.serve.runs import LiveServer
from tests.viz.browser import FLAGS, find_chromium, skip_reason

pytest.importorskip("fastapi", reason="qkv serve needs the serve extra")
from qkv.serve import create_app  # noqa: E402

COUNT_BATCHES = """
window.__tokenBatches = 0;
new MutationObserver(function (records) {
  if (records.some(function (r) { return r.target.id === "tokens" && r.addedNodes.length; })) window.__tokenBatches++;
}).observe(document.getElementById("tokens"), { childList: true });
"""


@pytest.fixture(scope="module")
def browser():
    """Yields ``(context, log)``: a Chromium context whose requests may only go to 127.0.0.1 (others are aborted
    and recorded in ``log["blocked"]``); console and page errors go to ``log["errors"]``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip(skip_reason())
    log = {"errors": [], "blocked": []}

    def guard(route):
        url = urlparse(route.request.url)
        if url.scheme in ("data", "about") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            log["blocked"].append(route.request.url)
            route.abort()

    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=path, headless=True, args=list(FLAGS[1:]), viewport={"width": 1100, "height": 900}
        )
        context.route("**/*", guard)
        yield context, log
        context.close()


def open_page(context, log, url):
    page = context.new_page()
    page.on("console", lambda msg: log["errors"].append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: log["errors"].append(str(exc)))
    page.goto(url)
    page.wait_for_function("() => document.documentElement.dataset.qkvReady === '1'", timeout=10_000)
    return page


def run(page, text):
    page.fill("#prompt", text)
    page.click("#go")
    page.wait_for_function("() => document.documentElement.dataset.qkvDone === '1'", timeout=30_000)
    return page.evaluate("window.qkvPlayground.state()")


def test_translator_page_streams_text_and_draws_cross_attention(browser, mt_dir):
    context, log = browser
    app = create_app(mt_dir)
    with LiveServer(app) as server:
        page = open_page(context, log, server.url + "/")
        state = run(page, "3 mars 2019")
        import httpx

        body = httpx.post(server.url + "/v1/completions",
                          json={"prompt": "3 mars 2019", "max_tokens": 40, "temperature": 0, "return_attention": True}).json()
        choice = body["choices"][0]
        assert state["error"] is None
        assert page.text_content("#output") == choice["text"] == state["text"]
        assert state["tokens"] == choice["attention"]["tokens"] and state["keys"] == choice["attention"]["keys"]
        assert page.locator("#tokens .tok").count() == len(state["tokens"]) > 0
        n_heads = len(state["weights"][0])
        assert page.locator("#head option").count() == n_heads + 1  # each head and their mean
        mean_image = page.evaluate("window.qkvPlayground.image()")
        page.select_option("#head", "1")
        assert page.evaluate("window.qkvPlayground.image()") != mean_image  # the heatmap shows the chosen head
        page.hover("#tokens .tok >> nth=0")
        assert "attends to" in page.text_content("#info")
        colour = page.evaluate("document.querySelector('.qkv-hm-matrix').getContext('2d')"
                               ".getImageData(0, 0, 2000, 2000).data.some(function (v, i) { return i % 4 < 3 && v < 200; })")
        assert colour  # something dark was drawn: the heatmap is not blank
    assert not log["errors"], log["errors"]
    assert not log["blocked"], log["blocked"]


def test_language_model_page_adds_tokens_as_they_arrive(browser, lm_dir):
    context, log = browser
    with LiveServer(create_app(lm_dir)) as server:
        page = open_page(context, log, server.url + "/")
        page.evaluate(COUNT_BATCHES)
        page.fill("#max-tokens", "200")  # long enough that the stream cannot arrive in one network read
        state = run(page, "to be or not")
        assert len(state["tokens"]) == 200 and len(state["weights"]) == 200
        assert page.evaluate("window.__tokenBatches") > 1  # tokens reached the page in several pieces
        assert len(state["weights"][-1][0]) == len(state["keys"]) + 199  # a language model's keys grow
    assert not log["errors"], log["errors"]
    assert not log["blocked"], log["blocked"]
    assert json.dumps(state)  # the state is plain data
