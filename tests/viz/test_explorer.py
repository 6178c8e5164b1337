"""The HTML attention explorer: safe embedding, no network, and behaviour in a real headless Chromium."""

import io
import json
import re

import pytest
import torch

from qkv.viz import AttentionView, attention_explorer_html, embed_json, write_attention_explorer

EVIL = '</script><script>window.pwned=1</script><!--'
SRC = ["<s>", "d", "a", "t", "e", " ", EVIL, "&amp;", "\u2028"]
OUT = ["J", "a", "n", " ", "2", "\"'"]


def cross_view(num_layers=2, heads=3):
    weights = [torch.softmax(torch.randn(1, heads, len(OUT), len(SRC)) * 3, dim=-1) for _ in range(num_layers)]
    return AttentionView("decoder cross-attention", weights, OUT, SRC)


def self_view():
    weights = [torch.softmax(torch.randn(2, 2, len(SRC), len(SRC)), dim=-1)]
    return AttentionView("encoder self-attention", weights, SRC)


def data_block(page: str) -> str:
    match = re.search(r'<script type="application/json" id="qkv-data">(.*?)</script>', page, re.S)
    assert match, "no data block"
    return match.group(1)


def test_embedded_json_cannot_break_out_and_round_trips():
    data = {"tokens": SRC, "x": [0.5]}
    text = embed_json(data)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == data


def test_page_is_self_contained_and_data_round_trips():
    view = cross_view()
    page = attention_explorer_html([view, self_view()], title="<b>dates</b> & co")
    assert page.count("</script>") == 2  # only our own two blocks; the evil token is escaped
    assert "<title>&lt;b&gt;dates&lt;/b&gt; &amp; co</title>" in page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|https?://", page)  # nothing loaded from anywhere
    data = json.loads(data_block(page))
    first, second = data["views"]
    assert first["queryTokens"] == OUT and first["keyTokens"] == SRC
    assert second["queryTokens"] == second["keyTokens"] == SRC  # self-attention: same tokens both sides
    assert len(first["layers"]) == 2 and len(first["layers"][0]["heads"]) == 3
    expected = view.weights[1][0, 2].numpy()
    got = torch.tensor(first["layers"][1]["heads"][2]).numpy()
    assert abs(got - expected).max() <= 5e-5  # rounded to 4 digits


def test_rnn_weights_as_one_head_and_batch_index():
    w = torch.softmax(torch.randn(3, len(OUT), len(SRC)), dim=-1)  # (B, L, S) additive weights
    page = attention_explorer_html(AttentionView("additive", [w[1]], OUT, SRC))
    heads = json.loads(data_block(page))["views"][0]["layers"][0]["heads"]
    assert len(heads) == 1 and abs(torch.tensor(heads[0]) - w[1]).max() <= 5e-5
    w4 = torch.rand(3, 2, len(OUT), len(SRC))
    page = attention_explorer_html(AttentionView("b", [w4], OUT, SRC), batch_index=2)
    assert abs(torch.tensor(json.loads(data_block(page))["views"][0]["layers"][0]["heads"]) - w4[2]).max() <= 5e-5


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (AttentionView("v", [torch.rand(2, len(SRC))], OUT, SRC), r"query_tokens has 6 labels but weights of shape \(1, 2, 9\) have L=2"),
        (AttentionView("v", [torch.rand(len(OUT), 3)], OUT, SRC), r"key_tokens has 9 labels .* S=3"),
        (AttentionView("v", [torch.full((len(OUT), len(SRC)), float("nan"))], OUT, SRC), r"weights\[0\] of shape \(6, 9\) has 54 non-finite"),
        (AttentionView("v", [torch.rand(1, 1, 1, 6, 9)], OUT, SRC), r"weights\[0\] must have shape .* got \(1, 1, 1, 6, 9\)"),
        (AttentionView("v", [], OUT, SRC), "non-empty list"),
        (AttentionView("v", [torch.rand(6, 9)], OUT, SRC, layer_names=["a", "b"]), "2 layer_names for 1 layers"),
    ],
)
def test_bad_views_raise_with_values(view, message):
    with pytest.raises(ValueError, match=message):
        attention_explorer_html(view)
    with pytest.raises(ValueError, match="batch_index 5 out of range"):
        attention_explorer_html(AttentionView("v", [torch.rand(2, 1, 6, 9)], OUT, SRC), batch_index=5)


def test_write_is_atomic_and_utf8(tmp_path):
    path = write_attention_explorer(tmp_path / "a" / "explorer.html", cross_view())
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["explorer.html"]


def matrix_pixels(page):
    return page.evaluate("window.qkvExplorer.matrixImage()")


@pytest.mark.parametrize("view_index", [0, 1], ids=["cross-attention", "self-attention"])
def test_explorer_in_headless_chromium(browser_page, tmp_path, view_index):
    page, errors = browser_page
    errors.clear()
    path = write_attention_explorer(tmp_path / "explorer.html", [cross_view(), self_view()], title="test")
    page.goto(path.as_uri())
    page.wait_for_function("document.documentElement.dataset.qkvReady === '1'", timeout=10_000)
    assert page.evaluate("window.pwned") is None  # the evil token did not run
    if view_index:
        page.select_option("#view", "1")
    view = json.loads(data_block(path.read_text(encoding="utf-8")))["views"][view_index]
    # Tokens are shown as text, spaces made visible; the evil token arrives intact.
    assert page.locator("#kcol .tok").count() == len(view["keyTokens"])
    assert page.locator("#kcol .tok").nth(6).text_content() == EVIL
    assert page.locator("#kcol .tok").nth(5).text_content() == "\u2423"

    before = matrix_pixels(page)
    page.select_option("#head", "1")
    assert page.evaluate("window.qkvExplorer.state().head") == 1
    after = matrix_pixels(page)
    assert after != before  # switching head changes the picture
    page.select_option("#head", "-1")  # mean of heads
    assert matrix_pixels(page) not in (before, after)
    page.select_option("#head", "1")
    assert matrix_pixels(page) == after  # and it is a function of the selection only

    page.hover("#qcol .tok >> nth=2")  # hover a query token: its row lights up, info names its top keys
    assert page.evaluate("window.qkvExplorer.state().hover") == {"side": "q", "index": 2}
    assert "attends to" in page.locator("#info").text_content()
    assert matrix_pixels(page) != after
    backgrounds = page.eval_on_selector_all("#kcol .tok", "els => els.map(e => e.style.background)")
    assert all(backgrounds) and len(set(backgrounds)) > 1  # keys shaded by weight
    box = page.locator("#matrix").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 12, box["y"] + box["height"] - 12)  # bottom-right cell
    assert page.evaluate("window.qkvExplorer.state().hover.side") == "cell"
    assert re.search(r"-> key \d+ .*: \d\.\d{4}$", page.locator("#info").text_content())

    shot = page.screenshot(full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    pil = pytest.importorskip("PIL.Image")
    assert pil.open(io.BytesIO(shot)).size[0] == 1200
    (tmp_path / "screenshot.png").write_bytes(shot)
    assert errors == []
