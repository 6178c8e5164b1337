"""The playground page served at ``GET /``: type a text, watch the output stream and its attention grow.

Built with :func:`qkv.viz._page.html_document`, so it draws with the explorer's ``QkvHeatmap`` (one row
per generated token, added as the token arrives; the key columns are the source tokens of a translator,
the prompt and the tokens so far of a language model). Nothing is loaded from elsewhere: the
Content-Security-Policy allows only inline code and requests to this server (``connect-src 'self'``).

Test hook: ``window.qkvPlayground`` (``state()``, ``image()``) and ``document.documentElement.dataset``:
``qkvReady == "1"`` once the page is set up, ``qkvDone == "1"`` when a run has finished.
"""

from __future__ import annotations

from qkv.viz._page import OFFLINE_CSP, html_document

__all__ = ["playground_html"]

CSP = OFFLINE_CSP + "; connect-src 'self'"

CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 10px; }
#form { display: flex; gap: 10px; align-items: flex-end; flex-wrap: wrap; margin-bottom: 10px; }
#prompt { width: 36em; height: 3.2em; font: 14px monospace; }
#form input { width: 5em; }
#output { font: 15px monospace; white-space: pre-wrap; min-height: 1.6em; padding: 6px; background: #f6f6f6;
          border-radius: 4px; margin-bottom: 8px; }
#tokens { display: flex; flex-wrap: wrap; gap: 2px; font-family: monospace; margin-bottom: 8px; min-height: 22px; }
.tok { padding: 1px 4px; border-radius: 3px; background: #eef; cursor: default; white-space: pre; }
.tok.active { outline: 2px solid #e4572e; }
#controls { display: flex; gap: 16px; align-items: center; margin-bottom: 6px; }
#info { font-family: monospace; min-height: 1.4em; margin-bottom: 6px; color: #444; }
#status { color: #777; }
.error { color: #b00020; }
"""

BODY = """
<h1 id="title"></h1>
<form id="form">
  <label>input<br><textarea id="prompt" placeholder="type a sentence"></textarea></label>
  <label id="max-box">max tokens<br><input id="max-tokens" type="number" min="1"></label>
  <label id="temp-box">temperature<br><input id="temperature" type="number" min="0" step="0.1" value="0"></label>
  <button id="go" type="submit">Run</button>
  <span id="status"></span>
</form>
<div id="output"></div>
<div id="tokens"></div>
<div id="controls">
  <label>head <select id="head"></select></label>
  <label>colour <select id="scale"></select></label>
  <span class="hint" id="what"></span>
</div>
<div id="info"></div>
<div id="heatmap"></div>
"""

JS = r"""
(function () {
  "use strict";
  var CFG = JSON.parse(document.getElementById("qkv-data").textContent);
  function $(id) { return document.getElementById(id); }
  var hm = QkvHeatmap.create($("heatmap"), { scale: "absolute", maxSide: 560 });
  var st = { keys: [], tokens: [], weights: [], text: "", head: -1, heads: 0, running: false, error: null };

  function option(select, value, label) {
    var o = document.createElement("option"); o.value = String(value); o.textContent = label; select.appendChild(o);
  }
  function keys() {  // a language model's own tokens become keys of the following steps
    return CFG.cross ? st.keys : st.keys.concat(st.tokens.slice(0, Math.max(0, st.tokens.length - 1)));
  }
  function row(w) {
    var v = st.head >= 0 ? w[st.head] : w[0].map(function (_, j) {
      var s = 0; for (var h = 0; h < w.length; h++) s += w[h][j]; return s / w.length;
    });
    var out = v.slice(); while (out.length < keys().length) out.push(null); return out;
  }
  var pending = false;
  function redraw() { pending = false; hm.update(st.weights.map(row), st.tokens.slice(), keys()); }
  function redrawSoon() {  // at most one picture per frame while tokens pour in
    if (!pending) { pending = true; window.requestAnimationFrame(function () { if (pending) redraw(); }); }
  }
  function describe(sel) {
    if (!sel || !st.weights.length) {
      $("info").textContent = st.tokens.length ? "hover a token or a cell" : ""; return;
    }
    var ks = keys(), m = st.weights.map(row), text;
    if (sel.side === "cell") {
      text = JSON.stringify(st.tokens[sel.index]) + " -> " + JSON.stringify(ks[sel.key]) + ": " +
        (m[sel.index][sel.key] === null ? "-" : m[sel.index][sel.key].toFixed(3));
    } else if (sel.side === "q") {
      var pairs = m[sel.index].map(function (w, j) { return [w || 0, ks[j]]; });
      pairs.sort(function (a, b) { return b[0] - a[0]; });
      text = JSON.stringify(st.tokens[sel.index]) + " attends to: " + pairs.slice(0, 4).map(function (p) {
        return JSON.stringify(p[1]) + " " + p[0].toFixed(3); }).join(", ");
    } else {
      text = "key " + JSON.stringify(ks[sel.index]);
    }
    $("info").textContent = text;
    Array.prototype.forEach.call($("tokens").children, function (d, i) {
      d.classList.toggle("active", sel.side !== "k" && i === sel.index);
    });
  }
  function addToken(label, weights) {
    var i = st.tokens.length, d = document.createElement("span");
    st.tokens.push(label); if (weights) st.weights.push(weights);
    d.className = "tok"; d.textContent = QkvHeatmap.show(label); d.title = "token " + i + " " + JSON.stringify(label);
    d.addEventListener("mouseenter", function () { hm.hover({ side: "q", index: i }); });
    d.addEventListener("mouseleave", function () { hm.hover(null); });
    $("tokens").appendChild(d);
  }
  function setHeads(n) {
    if (n === st.heads) return;
    st.heads = n; var sel = $("head"); sel.replaceChildren();
    if (n > 1) option(sel, -1, "mean of heads");
    for (var h = 0; h < n; h++) option(sel, h, "head " + h);
    st.head = n > 1 ? -1 : 0; sel.value = String(st.head);
  }
  function onChunk(obj) {
    if (obj.error) { fail(obj.error.message); return; }
    var c = obj.choices[0], a = c.attention;
    if (a && a.keys) { st.keys = a.keys; $("what").textContent = a.kind + "-attention, layer " + a.layer; }
    st.text += c.text; $("output").textContent = st.text;
    if (a && a.weights) { setHeads(a.weights.length); addToken(a.token, a.weights); redrawSoon(); }
    $("status").textContent = st.tokens.length + " tokens" + (c.finish_reason ? " (" + c.finish_reason + ")" : "");
  }
  function fail(message) {
    st.error = message; $("status").textContent = message; $("status").className = "error";
  }
  function reset() {
    st.keys = []; st.tokens = []; st.weights = []; st.text = ""; st.error = null;
    $("output").textContent = ""; $("tokens").replaceChildren(); $("info").textContent = "";
    $("status").textContent = ""; $("status").className = ""; hm.clear(); redraw();
    document.documentElement.dataset.qkvDone = "0";
  }
  function done() {
    redraw(); st.running = false; $("go").disabled = false; document.documentElement.dataset.qkvDone = "1";
  }

  async function readStream(resp) {
    var reader = resp.body.getReader(), decoder = new TextDecoder(), buffer = "";
    for (;;) {
      var part = await reader.read();
      if (part.done) return;
      buffer += decoder.decode(part.value, { stream: true });
      var events = buffer.split("\n\n"); buffer = events.pop();
      for (var k = 0; k < events.length; k++) {
        var line = events[k].trim();
        if (line.indexOf("data: ") !== 0) continue;
        var payload = line.slice(6);
        if (payload === "[DONE]") return;
        onChunk(JSON.parse(payload));
      }
    }
  }
  async function complete(text) {
    var body = { prompt: text, max_tokens: +$("max-tokens").value || CFG.maxTokens,
                 temperature: +$("temperature").value || 0, stream: true,
                 return_attention: { layer: -1, head: "all" } };
    var resp = await fetch("/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
                                                body: JSON.stringify(body) });
    if (!resp.ok) { var e = await resp.json(); fail(e.error ? e.error.message : resp.statusText); return; }
    await readStream(resp);
  }
  async function classify(text) {
    var resp = await fetch("/v1/classify", { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify({ input: text }) });
    var obj = await resp.json();
    if (!resp.ok) { fail(obj.error.message); return; }
    var d = obj.data[0];
    st.text = d.label + "  " + JSON.stringify(d.probabilities); $("output").textContent = st.text;
  }
  async function run(text) {
    if (st.running || !text.trim()) return;
    reset(); st.running = true; $("go").disabled = true; $("status").textContent = "running...";
    try { await (CFG.task === "classify" ? classify(text) : complete(text)); }
    catch (err) { fail(String(err)); }
    done();
  }

  $("title").textContent = "qkv playground: " + CFG.model + " (" + CFG.task + ")";
  $("max-tokens").value = String(CFG.maxTokens);
  QkvHeatmap.SCALES.forEach(function (s) { option($("scale"), s[0], s[1]); });
  $("scale").addEventListener("change", function (e) { hm.setScale(e.target.value); });
  $("head").addEventListener("change", function (e) { st.head = +e.target.value; redraw(); });
  $("form").addEventListener("submit", function (e) { e.preventDefault(); run($("prompt").value); });
  $("prompt").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); run($("prompt").value); }
  });
  hm.onChange(function (sel) { describe(sel); });
  if (CFG.task === "classify") {
    ["max-box", "temp-box", "controls", "heatmap"].forEach(function (id) { $(id).style.display = "none"; });
  }
  window.qkvPlayground = {
    state: function () { return JSON.parse(JSON.stringify(st)); },
    image: function () { return hm.image(); }
  };
  document.documentElement.dataset.qkvReady = "1";
})();
"""


def playground_html(model: str, task: str, *, cross: bool, max_tokens: int) -> str:
    """The playground page for the served run.

    Args:
        model: the model id (shown in the title).
        task: ``"translation"``, ``"lm"`` or ``"classify"``.
        cross: the attention shown is cross-attention (translators) rather than self-attention.
        max_tokens: the default of the page's ``max tokens`` box.

    Returns:
        The HTML document.
    """
    data = {"model": model, "task": task, "cross": cross, "maxTokens": max_tokens}
    return html_document(f"qkv playground: {model}", BODY, css=CSS, js=JS, data=data, csp=CSP)
