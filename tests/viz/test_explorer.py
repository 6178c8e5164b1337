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
    assert page.count("</script>") == 3  # only our own blocks (data, heatmap, explorer); the evil token is escaped
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


def open_page(browser_page, path):
    page, errors = browser_page
    errors.clear()
    page.goto(path.as_uri())
    page.wait_for_function("document.documentElement.dataset.qkvReady === '1'", timeout=10_000)
    return page, errors


def state(page):
    return page.evaluate("window.qkvExplorer.state()")


def matrix_pixels(page):
    return page.evaluate("window.qkvExplorer.matrixImage()")


@pytest.mark.parametrize("view_index", [0, 1], ids=["cross-attention", "self-attention"])
def test_explorer_in_headless_chromium(browser_page, tmp_path, view_index):
    path = write_attention_explorer(tmp_path / "explorer.html", [cross_view(), self_view()], title="test")
    page, errors = open_page(browser_page, path)
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
    box = page.locator(".qkv-hm-matrix").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 12, box["y"] + box["height"] - 12)  # bottom-right cell
    assert page.evaluate("window.qkvExplorer.state().hover.side") == "cell"
    assert re.search(r"-> key \d+ .*: \d\.\d{4}$", page.locator("#info").text_content())

    shot = page.screenshot(full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    pil = pytest.importorskip("PIL.Image")
    assert pil.open(io.BytesIO(shot)).size[0] == 1200
    (tmp_path / "screenshot.png").write_bytes(shot)
    assert errors == []


def deep_view():
    """Three layers; the first with 3 heads, the others with 2 (layers may differ in head count)."""
    weights = [torch.softmax(torch.randn(1, h, len(OUT), len(SRC)) * 3, dim=-1) for h in (3, 2, 2)]
    return AttentionView("decoder cross-attention", weights, OUT, SRC, layer_names=["first", "middle", "last"])


def test_opens_on_last_layer_and_keeps_layer_across_views(browser_page, tmp_path):
    path = write_attention_explorer(tmp_path / "e.html", [deep_view(), self_view(), cross_view(num_layers=2)])
    page, errors = open_page(browser_page, path)
    assert state(page)["layer"] == 2 and page.input_value("#layer") == "2"  # "last", as the PNGs
    page.select_option("#layer", "1")
    page.select_option("#head", "1")
    page.select_option("#view", "2")  # another attention with two layers: the same layer and head stay
    assert (state(page)["view"], state(page)["layer"], state(page)["head"]) == (2, 1, 1)
    assert page.input_value("#layer") == "1" and page.input_value("#head") == "1"
    page.select_option("#view", "1")  # only one layer there: its last
    assert state(page)["layer"] == 0
    assert errors == []


def uniform_and_aligned_views():
    near_uniform = torch.softmax(torch.randn(len(OUT), len(SRC)) * 0.05, dim=-1)  # ~1/9 everywhere
    aligned = torch.zeros(len(OUT), len(SRC))
    aligned[torch.arange(len(OUT)), torch.arange(len(OUT))] = 1.0  # query i -> key i
    return [AttentionView("uniform", [near_uniform], OUT, SRC), AttentionView("aligned", [aligned], OUT, SRC)]


def brightest(page, rows, cols):
    """The largest red+green+blue over the cells, read back from the heatmap canvas."""
    return max(sum(page.evaluate(f"window.qkvExplorer.cellColour({i}, {j})")) for i in range(rows) for j in range(cols))


def test_legend_and_absolute_scale_keep_uniform_attention_dark(browser_page, tmp_path):
    path = write_attention_explorer(tmp_path / "e.html", uniform_and_aligned_views())
    page, errors = open_page(browser_page, path)
    legend = page.locator("#heatmap .qkv-legend")
    assert legend.count() == 1 and legend.is_visible()
    assert page.input_value("#scale") == "absolute" and legend.locator(".qkv-legend-high").text_content() == "1"
    legend_bar = legend.locator(".qkv-legend-bar").bounding_box()
    assert legend_bar["width"] >= 100
    uniform_absolute = brightest(page, 2, len(SRC))
    page.select_option("#view", "1")
    aligned_absolute = brightest(page, 2, len(SRC))
    assert uniform_absolute < aligned_absolute - 200  # dark purple vs bright yellow: not equally sharp
    page.select_option("#view", "0")
    page.select_option("#scale", "row")  # each row stretched to its maximum: uniform rows light up
    assert legend.locator(".qkv-legend-high").text_content() == "row max"
    uniform_row = brightest(page, 2, len(SRC))
    assert uniform_row > uniform_absolute + 200 and abs(uniform_row - aligned_absolute) < 60
    page.select_option("#scale", "matrix")
    high = float(legend.locator(".qkv-legend-high").text_content())
    data = json.loads(data_block(path.read_text(encoding="utf-8")))
    assert high == pytest.approx(max(max(r) for r in data["views"][0]["layers"][0]["heads"][0]), abs=1e-3)
    assert errors == []


def test_all_heads_grid_opens_the_clicked_head(browser_page, tmp_path):
    path = write_attention_explorer(tmp_path / "e.html", deep_view())
    page, errors = open_page(browser_page, path)
    page.click("#mode")
    assert page.locator("#all").is_visible() and not page.locator("#single").is_visible()
    thumbs = page.locator(".thumb")
    assert thumbs.count() == 3 + 2 + 2  # every layer x head
    cells = page.eval_on_selector_all(".thumb", "els => els.map(e => [+e.dataset.layer, +e.dataset.head])")
    assert cells == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1]]
    current = page.eval_on_selector_all(".thumb.current", "els => els.map(e => [+e.dataset.layer, +e.dataset.head])")
    assert current == [[2, 0]]
    images = page.eval_on_selector_all(".thumb", "els => els.map(e => e.toDataURL())")
    assert len(set(images)) == 7  # seven different maps
    page.click(".thumb[data-layer='0'][data-head='2']")
    assert (state(page)["layer"], state(page)["head"], state(page)["grid"]) == (0, 2, False)
    assert page.locator("#single").is_visible() and page.input_value("#head") == "2"
    assert errors == []


def test_click_pins_selection_until_clicked_again(browser_page, tmp_path):
    path = write_attention_explorer(tmp_path / "e.html", cross_view(heads=2))
    page, errors = open_page(browser_page, path)
    page.click("#qcol .tok >> nth=2")
    assert state(page)["pin"] == {"side": "q", "index": 2}
    pinned_picture = matrix_pixels(page)
    page.hover("#kcol .tok >> nth=4")  # hovering elsewhere does not move the pinned selection
    assert state(page)["hover"] == {"side": "k", "index": 4} and state(page)["pin"] == {"side": "q", "index": 2}
    info = page.locator("#info").text_content()
    assert "pinned" in info and 'query 2 "n" attends to' in info
    assert page.locator("#qcol .tok.pinned").count() == 1
    page.select_option("#head", "1")  # the pin survives a head change
    assert state(page)["pin"] == {"side": "q", "index": 2}
    page.click("#qcol .tok >> nth=2")  # the same click again releases it
    assert state(page)["pin"] is None and page.locator("#qcol .tok.pinned").count() == 0
    box = page.locator(".qkv-hm-matrix").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 12, box["y"] + box["height"] - 12)  # a cell of the canvas
    assert state(page)["pin"]["side"] == "cell"
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    assert state(page)["pin"]["side"] == "cell" and matrix_pixels(page) != pinned_picture
    page.keyboard.press("Escape")
    assert state(page)["pin"] is None
    assert errors == []


def test_no_request_leaves_the_page(browser_page, tmp_path):
    path = write_attention_explorer(tmp_path / "e.html", cross_view())
    page, errors = open_page(browser_page, path)
    page.click("#mode")
    page.click(".thumb >> nth=1")
    assert errors == []  # drawing and clicking fetched nothing (the fixture records every request)
    outcome = page.evaluate("fetch('https://example.com/x').then(() => 'sent', () => 'blocked')")
    assert outcome == "blocked"  # the Content-Security-Policy refuses any network access
    assert not [e for e in errors if e.startswith("network request")]
    errors.clear()


def test_heatmap_piece_is_reusable_with_growing_data(browser_page, tmp_path):
    """Another page (e.g. ``qkv serve``'s) includes QkvHeatmap through html_document and feeds it row by row."""
    from qkv.viz._page import html_document

    js = """
    var hm = QkvHeatmap.create(document.getElementById("here"), {scale: "absolute"});
    var seen = [];
    hm.onChange(function (sel, pinned) { seen.push([sel, pinned]); });
    window.demo = {hm: hm, seen: seen};
    hm.update([], [], ["a", "b", "c"]);
    document.documentElement.dataset.qkvReady = "1";
    """
    path = tmp_path / "reuse.html"
    path.write_text(html_document("reuse <test>", '<div id="here"></div>', js=js), encoding="utf-8")
    page, errors = open_page(browser_page, path)
    assert page.title() == "reuse <test>"
    rows = [[0.1, 0.2, 0.7], [1.0, 0.0, 0.0]]
    for n in (1, 2):  # one row per generated token
        page.evaluate(f"demo.hm.update({json.dumps(rows[:n])}, {json.dumps(['x', 'y'][:n])}, ['a', 'b', 'c'])")
        assert page.evaluate("demo.hm.geom.L") == n
    bright, dark = page.evaluate("[demo.hm.cellColour(1, 0), demo.hm.cellColour(1, 1)]")
    assert sum(bright) > sum(dark) + 300
    assert page.locator("#here .qkv-legend").count() == 1
    page.evaluate("demo.hm.click({side: 'cell', index: 1, key: 0})")
    assert page.evaluate("demo.seen[demo.seen.length - 1][1]") == {"side": "cell", "index": 1, "key": 0}
    assert errors == []


def test_html_document_refuses_code_that_would_end_its_element():
    from qkv.viz._page import html_document

    with pytest.raises(ValueError, match="js must not contain '</s'"):
        html_document("t", "", js="var x = '</script>';")
    page = html_document("t", "<p>hi</p>", data={"a": "</script>"})
    assert page.count("</script>") == 2 and "default-src 'none'" in page.replace("&#x27;", "'")
