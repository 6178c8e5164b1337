"""Self-contained HTML pages with attention heatmaps: the reusable drawing piece and the document around it.

Any qkv page that shows attention (the explorer of :mod:`qkv.viz.explorer`, the ``qkv serve`` playground)
builds its document with :func:`html_document`, which includes ``HEATMAP_CSS`` and ``HEATMAP_JS``. The
script defines ``window.QkvHeatmap``:

- ``QkvHeatmap.create(parent, {scale, maxSide, cell})`` -> a heatmap in ``parent``: a colour legend above
  an ``(L, S)`` matrix drawn on a canvas with its row and column labels. Methods:
  ``update(matrix, rowLabels, colLabels)`` (call again whenever the data grows, e.g. one row per generated
  token; a missing or ``null`` cell is drawn grey), ``setScale("absolute" | "row" | "matrix")``,
  ``hover(sel)``, ``click(sel)`` (pins ``sel``; the same click again releases it), ``unpin()``,
  ``selection()`` (the pinned selection, else the hovered one), ``pinned()``, ``onChange(fn(sel, pinned))``,
  ``cellColour(i, j)`` -> ``[r, g, b]``, ``image()`` -> PNG data URL. A selection is ``{side: "q", index}``
  (a query row), ``{side: "k", index}`` (a key column) or ``{side: "cell", index, key}``. Moving the
  mouse over the canvas hovers cells and labels; a click pins.
- ``QkvHeatmap.Legend``, ``thumbnail(canvas, matrix, scale, side)``, ``scaler(matrix, scale)``,
  ``viridis(t)``, ``show(token)`` and ``SCALES`` (``[value, label]`` pairs for a picker).

Colour scales: ``absolute`` maps weight 0..1 to the colormap (a near-uniform row stays dark, an alignment
is bright: the default, because attention weights are probabilities and comparable as they are); ``row``
stretches each query row to its own largest weight (where each query looks, even over long inputs);
``matrix`` stretches to the largest weight shown.

Safety: data sits in a ``<script type="application/json">`` block written by :func:`embed_json` and is read
with ``JSON.parse``; tokens reach the page only as ``textContent`` or canvas text, never as HTML. The
default Content-Security-Policy forbids every network request.
"""

from __future__ import annotations

import html
import json
from typing import Any

OFFLINE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"

HEATMAP_CSS = """
.qkv-hm { display: inline-flex; flex-direction: column; gap: 6px; }
.qkv-hm-matrix { cursor: crosshair; }
.qkv-legend { display: flex; align-items: center; gap: 6px; font: 12px system-ui, sans-serif; color: #444; }
.qkv-legend-bar { border: 1px solid #bbb; }
.qkv-legend-caption { color: #777; }
"""

HEATMAP_JS = r"""
(function () {
  "use strict";
  var VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                 [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  var FONT = "12px monospace", PITCH = 14, HILITE = "#e4572e", MISSING = "#e8e8e8";
  var SCALES = [["absolute", "absolute 0\u20131"], ["row", "each row's max"], ["matrix", "matrix max"]];

  function el(tag, cls) { var e = document.createElement(tag); e.className = cls; return e; }
  function viridis(t) {
    t = Math.min(1, Math.max(0, t));
    var x = t * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), f = x - i;
    var a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(",") + ")";
  }
  function show(tok) {
    var s = tok.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5").replace(/\r/g, "\u240d");
    return s.length ? s : "\u2205";
  }
  function clip(tok) { var s = show(tok); return s.length > 16 ? s.slice(0, 15) + "\u2026" : s; }
  function cellOf(m, i, j) { var v = m[i] ? m[i][j] : null; return typeof v === "number" ? v : null; }
  function maxOf(values) {
    var x = 0;
    values.forEach(function (v) { if (typeof v === "number" && v > x) x = v; });
    return x > 0 ? x : 1;
  }
  /** scaler(m, mode)(i, j): the colour position in [0, 1] of cell (i, j), or null where there is no value. */
  function scaler(m, mode) {
    var rows = m.map(function (r) { return maxOf(r); }), top = maxOf(rows);
    return function (i, j) {
      var v = cellOf(m, i, j);
      if (v === null) return null;
      return mode === "absolute" ? v : mode === "row" ? v / rows[i] : v / top;
    };
  }
  function same(a, b) { return !!a && !!b && a.side === b.side && a.index === b.index && a.key === b.key; }
  function sizeCanvas(canvas, w, h) {
    var dpr = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(w * dpr); canvas.height = Math.ceil(h * dpr);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    var ctx = canvas.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.font = FONT;
    return ctx;
  }

  function Legend(parent) {
    this.element = el("div", "qkv-legend");
    this.low = el("span", "qkv-legend-low"); this.bar = el("canvas", "qkv-legend-bar");
    this.high = el("span", "qkv-legend-high"); this.caption = el("span", "qkv-legend-caption");
    [this.low, this.bar, this.high, this.caption].forEach(function (e) { this.element.appendChild(e); }, this);
    parent.appendChild(this.element);
  }
  /** Draws the colour bar and names its ends for a scale; m (optional) gives the matrix maximum. */
  Legend.prototype.update = function (mode, m) {
    var ctx = sizeCanvas(this.bar, 160, 12);
    for (var x = 0; x < 160; x++) { ctx.fillStyle = viridis(x / 159); ctx.fillRect(x, 0, 1, 12); }
    this.low.textContent = "0";
    var top = m ? maxOf(m.map(function (r) { return maxOf(r); })).toFixed(3) : "each map's max";
    this.high.textContent = mode === "absolute" ? "1" : mode === "row" ? "row max" : top;
    this.caption.textContent = mode === "absolute" ? "attention weight (absolute scale)"
      : mode === "row" ? "each query row scaled to its largest weight" : "scaled to the largest weight shown";
    this.element.dataset.scale = mode;
  };

  function Heatmap(parent, options) {
    var o = options || {}, self = this;
    this.scale = o.scale || "absolute"; this.maxSide = o.maxSide || 640; this.cell = o.cell || 0;
    this.m = []; this.rows = []; this.cols = []; this.hovered = null; this.pin = null; this.listeners = [];
    this.geom = null;
    this.element = el("div", "qkv-hm");
    this.legend = new Legend(this.element);
    this.canvas = el("canvas", "qkv-hm-matrix");
    this.element.appendChild(this.canvas);
    parent.appendChild(this.element);
    this.canvas.addEventListener("mousemove", function (e) {
      var s = self.locate(e);
      if (!same(s, self.hovered) && (s || self.hovered)) self.hover(s);
    });
    this.canvas.addEventListener("mouseleave", function () { if (self.hovered) self.hover(null); });
    this.canvas.addEventListener("click", function (e) { var s = self.locate(e); if (s) self.click(s); });
  }
  var P = Heatmap.prototype;
  P.update = function (matrix, rowLabels, colLabels) {
    this.m = matrix; this.rows = rowLabels; this.cols = colLabels; this.draw();
  };
  P.setScale = function (mode) { this.scale = mode; this.draw(); };
  P.hover = function (sel) { this.hovered = sel || null; this.changed(); };
  P.click = function (sel) { this.pin = same(sel, this.pin) ? null : sel; this.changed(); };
  P.unpin = function () { if (this.pin) { this.pin = null; this.changed(); } };
  P.clear = function () { this.pin = null; this.hovered = null; };
  P.selection = function () { return this.pin || this.hovered; };
  P.pinned = function () { return this.pin; };
  P.onChange = function (fn) { this.listeners.push(fn); };
  P.changed = function () {
    this.draw();
    var s = this.selection(), p = this.pin;
    this.listeners.forEach(function (fn) { fn(s, p); });
  };
  P.locate = function (e) {
    var g = this.geom;
    if (!g) return null;
    var r = this.canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    var j = Math.floor((x - g.qw) / g.cell), i = Math.floor((y - g.kw) / g.cell);
    var row = i >= 0 && i < g.L, col = j >= 0 && j < g.S;
    if (row && col) return { side: "cell", index: i, key: j };
    if (row && x < g.qw) return { side: "q", index: i };
    if (col && y < g.kw) return { side: "k", index: j };
    return null;
  };
  P.outline = function (ctx, sel, width, dash) {
    var g = this.geom;
    if (!sel) return;
    ctx.save(); ctx.strokeStyle = HILITE; ctx.lineWidth = width; ctx.setLineDash(dash);
    if (sel.side === "q") ctx.strokeRect(g.qw, g.kw + sel.index * g.cell, g.S * g.cell, g.cell);
    if (sel.side === "k") ctx.strokeRect(g.qw + sel.index * g.cell, g.kw, g.cell, g.L * g.cell);
    if (sel.side === "cell") ctx.strokeRect(g.qw + sel.key * g.cell, g.kw + sel.index * g.cell, g.cell, g.cell);
    ctx.restore();
  };
  P.draw = function () {
    var L = this.rows.length, S = this.cols.length, canvas = this.canvas, rows = this.rows, cols = this.cols;
    var probe = canvas.getContext("2d"); probe.font = FONT;
    function widest(toks) {
      return toks.reduce(function (w, t) { return Math.max(w, probe.measureText(clip(t)).width); }, 10) + 8;
    }
    var qw = widest(rows), kw = widest(cols);
    var cell = this.cell || Math.max(4, Math.min(32, Math.floor(this.maxSide / Math.max(L, S, 1))));
    var W = qw + S * cell + 8, H = kw + L * cell + 8, ctx = sizeCanvas(canvas, W, H), f = scaler(this.m, this.scale);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    for (var i = 0; i < L; i++) for (var j = 0; j < S; j++) {
      var t = f(i, j);
      ctx.fillStyle = t === null ? MISSING : viridis(t); ctx.fillRect(qw + j * cell, kw + i * cell, cell, cell);
    }
    var step = Math.ceil(PITCH / cell);  // labels at least PITCH pixels apart: every step-th token
    ctx.fillStyle = "#222"; ctx.textBaseline = "middle"; ctx.textAlign = "right";
    for (i = 0; i < L; i += step) ctx.fillText(clip(rows[i]), qw - 4, kw + i * cell + cell / 2);
    ctx.textAlign = "left";
    for (j = 0; j < S; j += step) {
      ctx.save(); ctx.translate(qw + j * cell + cell / 2, kw - 4); ctx.rotate(-Math.PI / 2);
      ctx.fillText(clip(cols[j]), 0, 0); ctx.restore();
    }
    this.geom = { qw: qw, kw: kw, cell: cell, L: L, S: S };
    if (this.pin) {
      this.outline(ctx, this.pin, 3, []);
      if (!same(this.hovered, this.pin)) this.outline(ctx, this.hovered, 1.5, [4, 3]);
    } else {
      this.outline(ctx, this.hovered, 2, []);
    }
    this.legend.update(this.scale, this.m);
  };
  P.cellColour = function (i, j) {
    var g = this.geom, dpr = window.devicePixelRatio || 1;
    var x = Math.floor((g.qw + (j + 0.5) * g.cell) * dpr), y = Math.floor((g.kw + (i + 0.5) * g.cell) * dpr);
    return Array.prototype.slice.call(this.canvas.getContext("2d").getImageData(x, y, 1, 1).data, 0, 3);
  };
  P.image = function () { return this.canvas.toDataURL("image/png"); };

  /** A small unlabelled map of m on canvas, about side pixels on its longer side. */
  function thumbnail(canvas, m, mode, side) {
    var L = m.length, S = L ? m[0].length : 0, cell = Math.max(1, Math.floor(side / Math.max(L, S, 1)));
    var ctx = sizeCanvas(canvas, S * cell, L * cell), f = scaler(m, mode);
    for (var i = 0; i < L; i++) for (var j = 0; j < S; j++) {
      var t = f(i, j);
      ctx.fillStyle = t === null ? MISSING : viridis(t); ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }

  window.QkvHeatmap = {
    create: function (parent, options) { return new Heatmap(parent, options); },
    Legend: Legend, thumbnail: thumbnail, scaler: scaler, viridis: viridis, show: show, clip: clip,
    same: same, SCALES: SCALES
  };
})();
"""

_DOCUMENT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
{data}{scripts}
</body>
</html>
"""


def embed_json(data: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` element.

    Args:
        data: JSON-serialisable data (no NaN or infinity).

    Returns:
        JSON text where ``<``, ``>``, ``&``, U+2028 and U+2029 appear only as ``\\uXXXX`` escapes, so the
        text cannot end the script element or open a comment; ``json.loads`` gives ``data`` back.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def html_document(
    title: str, body: str, *, css: str = "", js: str = "", data: Any = None, csp: str = OFFLINE_CSP
) -> str:
    """A complete HTML page that has ``window.QkvHeatmap`` (``HEATMAP_CSS`` and ``HEATMAP_JS`` included).

    Args:
        title: the page title (HTML-escaped here).
        body: the page's own markup (trusted: written by qkv, never from data).
        css: the page's own style sheet, after ``HEATMAP_CSS``.
        js: the page's own script, run after ``HEATMAP_JS`` once the body exists.
        data: JSON-serialisable data, embedded with :func:`embed_json` as
            ``<script type="application/json" id="qkv-data">``; read it with
            ``JSON.parse(document.getElementById("qkv-data").textContent)``. ``None``: no data block.
        csp: the Content-Security-Policy (default: no network at all; a served page may add
            ``connect-src 'self'``).

    Returns:
        The document as a string.
    """
    for name, code in (("css", css), ("js", js)):
        if "</s" in code.lower():
            raise ValueError(f"{name} must not contain '</s' (it would end its element early)")
    block = "" if data is None else f'<script type="application/json" id="qkv-data">{embed_json(data)}</script>\n'
    scripts = f"<script>{HEATMAP_JS}</script>\n" + (f"<script>{js}</script>" if js else "")
    return _DOCUMENT.format(
        csp=html.escape(csp), title=html.escape(title), css=HEATMAP_CSS + css, body=body, data=block, scripts=scripts
    )
