"""The attention explorer's page: HTML skeleton, CSS and JavaScript, with no data in them.

``explorer.py`` fills ``{title}`` (HTML-escaped) and ``{data}`` (JSON with ``<`` escaped, inside a
``<script type="application/json">`` block). The script reads the data with ``JSON.parse`` and puts
tokens on the page only through ``textContent`` and canvas ``fillText``, never as HTML.

Test hook: ``window.qkvExplorer`` (``select``, ``hover``, ``state``, ``matrixImage``) and
``document.documentElement.dataset.qkvReady == "1"`` once the first picture is drawn.
"""

CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 8px; }
#controls { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
#controls label { display: flex; gap: 6px; align-items: center; }
#info { height: 3.2em; overflow: hidden; margin: 6px 0 10px; font-family: monospace; white-space: pre-wrap; }
#panes { display: flex; gap: 32px; align-items: flex-start; flex-wrap: wrap; }
#lines { display: flex; align-items: flex-start; }
.col { display: flex; flex-direction: column; font-family: monospace; }
.col.q { align-items: flex-end; }
.tok { height: 20px; line-height: 20px; padding: 0 4px; cursor: default; white-space: pre; border-radius: 3px;
       max-width: 16em; overflow: hidden; text-overflow: ellipsis; }
.tok.active { outline: 2px solid #e4572e; }
#matrix { cursor: crosshair; }
.hint { color: #777; font-size: 12px; }
"""

JS = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("qkv-data").textContent);
  var FONT = "12px monospace", ROW = 20, LINE_W = 180, HILITE = "#e4572e";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                 [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  var state = { view: 0, layer: 0, head: 0, hover: null };
  var geom = null, meanCache = {};
  function $(id) { return document.getElementById(id); }

  function viridis(t) {
    t = Math.min(1, Math.max(0, t));
    var x = t * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    var a = VIRIDIS[i], b = VIRIDIS[i + 1];
    var c = [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); });
    return "rgb(" + c.join(",") + ")";
  }
  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha.toFixed(3) + ")";
  }
  function show(tok) {
    var s = tok.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5").replace(/\r/g, "\u240d");
    return s.length ? s : "\u2205";
  }
  function clip(tok) { var s = show(tok); return s.length > 16 ? s.slice(0, 15) + "\u2026" : s; }
  function view() { return DATA.views[state.view]; }
  function heads() { return view().layers[state.layer].heads; }
  function matrix() {
    if (state.head >= 0) return heads()[state.head];
    var key = state.view + ":" + state.layer;
    if (!meanCache[key]) {
      var hs = heads();
      meanCache[key] = hs[0].map(function (row, i) {
        return row.map(function (_, j) {
          var s = 0; for (var h = 0; h < hs.length; h++) s += hs[h][i][j]; return s / hs.length;
        });
      });
    }
    return meanCache[key];
  }
  function maxOf(m) {
    var x = 0;
    m.forEach(function (r) { r.forEach(function (v) { if (v > x) x = v; }); });
    return x > 0 ? x : 1;
  }
  function color() { return state.head >= 0 ? PALETTE[state.head % PALETTE.length] : "#444444"; }

  function fill(select, labels, value) {
    select.replaceChildren.apply(select, labels.map(function (text, i) {
      var o = document.createElement("option"); o.value = String(text[0]); o.textContent = text[1]; return o;
    }));
    select.value = String(value);
  }
  function buildControls() {
    fill($("view"), DATA.views.map(function (v, i) { return [i, v.name]; }), state.view);
    $("view-box").style.display = DATA.views.length > 1 ? "" : "none";
    fill($("layer"), view().layers.map(function (l, i) { return [i, l.name]; }), state.layer);
    var hs = heads().map(function (_, h) { return [h, "head " + h]; });
    if (hs.length > 1) hs.push([-1, "mean of heads"]);
    fill($("head"), hs, state.head);
  }
  function buildTokens() {
    [["qcol", view().queryTokens, "q"], ["kcol", view().keyTokens, "k"]].forEach(function (spec) {
      var col = $(spec[0]);
      col.replaceChildren.apply(col, spec[1].map(function (tok, i) {
        var d = document.createElement("div");
        d.className = "tok"; d.textContent = show(tok); d.title = spec[2] + "[" + i + "] " + JSON.stringify(tok);
        d.addEventListener("mouseenter", function () { setHover({ side: spec[2], index: i }); });
        d.addEventListener("mouseleave", function () { setHover(null); });
        return d;
      }));
    });
  }

  function sizeCanvas(canvas, w, h) {
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(w * dpr); canvas.height = Math.ceil(h * dpr);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    var ctx = canvas.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.font = FONT;
    return ctx;
  }
  function drawMatrix() {
    var v = view(), m = matrix(), L = v.queryTokens.length, S = v.keyTokens.length, canvas = $("matrix");
    var probe = canvas.getContext("2d"); probe.font = FONT;
    function widest(toks) {
      return toks.reduce(function (w, t) { return Math.max(w, probe.measureText(clip(t)).width); }, 10) + 8;
    }
    var qw = widest(v.queryTokens), kw = widest(v.keyTokens);
    var cell = Math.max(4, Math.min(32, Math.floor(560 / Math.max(L, S))));
    var ctx = sizeCanvas(canvas, qw + S * cell + 8, kw + L * cell + 8), scale = maxOf(m);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, qw + S * cell + 8, kw + L * cell + 8);
    for (var i = 0; i < L; i++) for (var j = 0; j < S; j++) {
      ctx.fillStyle = viridis(m[i][j] / scale); ctx.fillRect(qw + j * cell, kw + i * cell, cell, cell);
    }
    var step = cell >= 10 ? 1 : Math.ceil(10 / cell);
    ctx.fillStyle = "#222"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
    for (i = 0; i < L; i += step) ctx.fillText(clip(v.queryTokens[i]), qw - 4, kw + i * cell + cell / 2);
    ctx.textAlign = "left";
    for (j = 0; j < S; j += step) {
      ctx.save(); ctx.translate(qw + j * cell + cell / 2, kw - 4); ctx.rotate(-Math.PI / 2);
      ctx.fillText(clip(v.keyTokens[j]), 0, 0); ctx.restore();
    }
    var hv = state.hover; ctx.strokeStyle = HILITE; ctx.lineWidth = 2;
    if (hv && hv.side !== "k") ctx.strokeRect(qw, kw + hv.index * cell, S * cell, cell);
    if (hv && hv.side === "k") ctx.strokeRect(qw + hv.index * cell, kw, cell, L * cell);
    if (hv && hv.side === "cell") ctx.strokeRect(qw + hv.key * cell, kw + hv.index * cell, cell, cell);
    geom = { qw: qw, kw: kw, cell: cell, L: L, S: S };
  }
  function drawLines() {
    var v = view(), m = matrix(), L = v.queryTokens.length, S = v.keyTokens.length, hv = state.hover;
    var ctx = sizeCanvas($("linecanvas"), LINE_W, Math.max(L, S) * ROW), scale = maxOf(m), base = color();
    var qi = hv && hv.side !== "k" ? hv.index : -1, kj = hv && hv.side === "k" ? hv.index : -1;
    ctx.lineWidth = 2;
    for (var i = 0; i < L; i++) for (var j = 0; j < S; j++) {
      if ((qi >= 0 && i !== qi) || (kj >= 0 && j !== kj)) continue;
      var a = m[i][j] / scale * (qi >= 0 || kj >= 0 ? 1 : 0.6);
      if (a < 0.01) continue;
      ctx.strokeStyle = rgba(base, a); ctx.beginPath();
      ctx.moveTo(0, i * ROW + ROW / 2); ctx.lineTo(LINE_W, j * ROW + ROW / 2); ctx.stroke();
    }
    Array.prototype.forEach.call($("qcol").children, function (d, i) {
      d.classList.toggle("active", i === qi);
      d.style.background = kj >= 0 ? rgba(base, m[i][kj] / scale) : "";
    });
    Array.prototype.forEach.call($("kcol").children, function (d, j) {
      d.classList.toggle("active", j === kj);
      d.style.background = qi >= 0 ? rgba(base, m[qi][j] / scale) : "";
    });
  }
  function describe() {
    var v = view(), m = matrix(), hv = state.hover, q = v.queryTokens, k = v.keyTokens;
    var where = v.layers[state.layer].name + ", " + (state.head >= 0 ? "head " + state.head : "mean of heads");
    if (!hv) return where + ": " + q.length + " queries x " + k.length + " keys. Hover a token or a cell.";
    if (hv.side === "cell") {
      return where + ": query " + hv.index + " " + JSON.stringify(q[hv.index]) + " -> key " + hv.key + " " +
        JSON.stringify(k[hv.key]) + ": " + m[hv.index][hv.key].toFixed(4);
    }
    var pairs = hv.side === "q" || hv.side === "row"
      ? m[hv.index].map(function (w, j) { return [w, k[j]]; })
      : m.map(function (row, i) { return [row[hv.index], q[i]]; });
    pairs.sort(function (a, b) { return b[0] - a[0]; });
    var top = pairs.slice(0, 5).map(function (p) { return JSON.stringify(p[1]) + " " + p[0].toFixed(3); }).join(", ");
    var who = hv.side === "k" ? "key " + hv.index + " " + JSON.stringify(k[hv.index]) + " is attended by: "
                              : "query " + hv.index + " " + JSON.stringify(q[hv.index]) + " attends to: ";
    return where + ": " + who + top;
  }
  function draw() { drawMatrix(); drawLines(); $("info").textContent = describe(); }
  function setHover(h) { state.hover = h; draw(); }
  function select(v, l, h) {
    var viewChanged = v !== state.view;
    state.view = Math.max(0, Math.min(v, DATA.views.length - 1));
    state.layer = Math.max(0, Math.min(l, view().layers.length - 1));
    var n = heads().length;
    state.head = h < 0 && n > 1 ? -1 : Math.max(0, Math.min(h, n - 1));
    state.hover = null;
    buildControls();
    if (viewChanged || !$("qcol").children.length) buildTokens();
    draw();
    return api.state();
  }

  $("view").addEventListener("change", function (e) { select(+e.target.value, 0, state.head); });
  $("layer").addEventListener("change", function (e) { select(state.view, +e.target.value, state.head); });
  $("head").addEventListener("change", function (e) { select(state.view, state.layer, +e.target.value); });
  $("matrix").addEventListener("mousemove", function (e) {
    if (!geom) return;
    var r = e.target.getBoundingClientRect();
    var j = Math.floor((e.clientX - r.left - geom.qw) / geom.cell);
    var i = Math.floor((e.clientY - r.top - geom.kw) / geom.cell);
    var inside = i >= 0 && i < geom.L && j >= 0 && j < geom.S;
    var prev = state.hover;
    var same = prev && prev.side === "cell" && prev.index === i && prev.key === j;
    if (inside && !same) setHover({ side: "cell", index: i, key: j });
    else if (!inside && prev) setHover(null);
  });
  $("matrix").addEventListener("mouseleave", function () { setHover(null); });

  var api = {
    select: select,
    hover: function (side, index, key) {
      setHover(side ? { side: side, index: index, key: key } : null);
      return api.state();
    },
    state: function () { return JSON.parse(JSON.stringify(state)); },
    matrixImage: function () { return $("matrix").toDataURL("image/png"); },
    linesImage: function () { return $("linecanvas").toDataURL("image/png"); }
  };
  window.qkvExplorer = api;
  select(0, 0, 0);
  document.documentElement.dataset.qkvReady = "1";
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; \
style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<h1>{title}</h1>
<div id="controls">
  <label id="view-box">attention <select id="view"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <span class="hint">rows: queries, columns: keys; hover a token or a cell</span>
</div>
<div id="info"></div>
<div id="panes">
  <canvas id="matrix" width="10" height="10"></canvas>
  <div id="lines"><div id="qcol" class="col q"></div><canvas id="linecanvas" width="10" height="10"></canvas>\
<div id="kcol" class="col k"></div></div>
</div>
<script type="application/json" id="qkv-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""
