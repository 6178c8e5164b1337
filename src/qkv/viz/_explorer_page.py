"""The attention explorer's own markup, CSS and JavaScript (no data in them), on top of ``QkvHeatmap``.

:func:`qkv.viz.explorer.attention_explorer_html` passes them to :func:`qkv.viz._page.html_document`.
The page opens on the last layer, keeps the layer and head when the attention (view) changes, and has two
modes: one head (heatmap with a colour legend beside bertviz-style lines between query and key tokens) and
all heads (a small map per layer x head; a click opens that head). Hovering a token or a cell highlights
it; a click pins it until the same click again (or Esc).

Test hook: ``window.qkvExplorer`` (``select``, ``hover``, ``click``, ``state``, ``matrixImage``,
``linesImage``, ``cellColour``) and ``document.documentElement.dataset.qkvReady == "1"`` once drawn.
"""

EXPLORER_CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 8px; }
#controls { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
#controls label { display: flex; gap: 6px; align-items: center; }
#info { min-height: 3.2em; margin: 6px 0 10px; font-family: monospace; white-space: pre-wrap; }
#single { display: flex; gap: 32px; align-items: flex-start; flex-wrap: wrap; }
#single[hidden], #all[hidden] { display: none; }
#lines { display: flex; align-items: flex-start; margin-top: 24px; }
.col { display: flex; flex-direction: column; font-family: monospace; }
.col.q { align-items: flex-end; }
.tok { height: 20px; line-height: 20px; padding: 0 4px; cursor: pointer; white-space: pre; border-radius: 3px;
       max-width: 16em; overflow: hidden; text-overflow: ellipsis; }
.tok.active { outline: 2px solid #e4572e; }
.tok.pinned { outline: 3px solid #e4572e; font-weight: bold; }
#grid { display: grid; gap: 4px 8px; align-items: center; justify-content: start; justify-items: start;
        margin-top: 8px; }
.grid-name { font-size: 12px; color: #555; justify-self: end; padding-right: 6px; }
.grid-head { font-size: 12px; color: #555; }
.thumb { cursor: pointer; border: 2px solid transparent; display: block; }
.thumb:hover { border-color: #999; }
.thumb.current { border-color: #e4572e; }
.hint { color: #777; font-size: 12px; }
"""

EXPLORER_BODY = """<h1>{title}</h1>
<div id="controls">
  <label id="view-box">attention <select id="view"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <label>colour <select id="scale"></select></label>
  <button id="mode" type="button">all heads</button>
  <span class="hint">rows: queries, columns: keys; hover a token or a cell, click to pin it</span>
</div>
<div id="info"></div>
<div id="single">
  <div id="heatmap"></div>
  <div id="lines"><div id="qcol" class="col q"></div><canvas id="linecanvas" width="10" height="10"></canvas>\
<div id="kcol" class="col k"></div></div>
</div>
<div id="all" hidden><div id="grid-legend"></div><div id="grid"></div></div>"""

EXPLORER_JS = r"""
(function () {
  "use strict";
  var Q = window.QkvHeatmap, DATA = JSON.parse(document.getElementById("qkv-data").textContent);
  var ROW = 20, LINE_W = 180, THUMB = 120;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  var state = { view: 0, layer: 0, head: 0, scale: "absolute", grid: false };
  var meanCache = {}, ready = false;
  function $(id) { return document.getElementById(id); }
  var side = Math.max(400, Math.min(900, window.innerWidth - 520));  // the lines pane fits beside it
  var hm = Q.create($("heatmap"), { scale: state.scale, maxSide: side });
  var gridLegend = new Q.Legend($("grid-legend"));

  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16), a = Math.min(1, Math.max(0, alpha));
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a.toFixed(3) + ")";
  }
  function view() { return DATA.views[state.view]; }
  function heads(layer) { return view().layers[layer === undefined ? state.layer : layer].heads; }
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
  function color() { return state.head >= 0 ? PALETTE[state.head % PALETTE.length] : "#444444"; }

  function fill(select, options, value) {
    select.replaceChildren.apply(select, options.map(function (o) {
      var e = document.createElement("option"); e.value = String(o[0]); e.textContent = o[1]; return e;
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
    fill($("scale"), Q.SCALES, state.scale);
  }
  function buildTokens() {
    [["qcol", view().queryTokens, "q"], ["kcol", view().keyTokens, "k"]].forEach(function (spec) {
      var col = $(spec[0]);
      col.replaceChildren.apply(col, spec[1].map(function (tok, i) {
        var d = document.createElement("div"), sel = { side: spec[2], index: i };
        d.className = "tok"; d.textContent = Q.show(tok); d.title = spec[2] + "[" + i + "] " + JSON.stringify(tok);
        d.addEventListener("mouseenter", function () { hm.hover(sel); });
        d.addEventListener("mouseleave", function () { hm.hover(null); });
        d.addEventListener("click", function () { hm.click(sel); });
        return d;
      }));
    });
  }

  function drawLines() {
    var v = view(), m = matrix(), L = v.queryTokens.length, S = v.keyTokens.length, sel = hm.selection();
    var canvas = $("linecanvas"), dpr = window.devicePixelRatio || 1, H = Math.max(L, S) * ROW;
    canvas.width = LINE_W * dpr; canvas.height = H * dpr;
    canvas.style.width = LINE_W + "px"; canvas.style.height = H + "px";
    var ctx = canvas.getContext("2d"), f = Q.scaler(m, state.scale), base = color();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    var qi = sel && sel.side !== "k" ? sel.index : -1, kj = sel && sel.side === "k" ? sel.index : -1;
    if (sel && sel.side === "cell") kj = -1;
    ctx.lineWidth = 2;
    for (var i = 0; i < L; i++) for (var j = 0; j < S; j++) {
      if ((qi >= 0 && i !== qi) || (kj >= 0 && j !== kj)) continue;
      var a = f(i, j) * (qi >= 0 || kj >= 0 ? 1 : 0.6);
      if (a < 0.01) continue;
      ctx.strokeStyle = rgba(base, a); ctx.beginPath();
      ctx.moveTo(0, i * ROW + ROW / 2); ctx.lineTo(LINE_W, j * ROW + ROW / 2); ctx.stroke();
    }
    var pin = hm.pinned();
    Array.prototype.forEach.call($("qcol").children, function (d, i) {
      d.classList.toggle("active", i === qi);
      d.classList.toggle("pinned", !!pin && pin.side === "q" && pin.index === i);
      d.style.background = kj >= 0 ? rgba(base, f(i, kj)) : "";
    });
    Array.prototype.forEach.call($("kcol").children, function (d, j) {
      d.classList.toggle("active", j === kj || (!!sel && sel.side === "cell" && sel.key === j));
      d.classList.toggle("pinned", !!pin && pin.side === "k" && pin.index === j);
      d.style.background = qi >= 0 ? rgba(base, f(qi, j)) : "";
    });
  }
  function describe() {
    var v = view(), m = matrix(), sel = hm.selection(), q = v.queryTokens, k = v.keyTokens;
    var where = v.layers[state.layer].name + ", " + (state.head >= 0 ? "head " + state.head : "mean of heads");
    if (state.grid) return v.name + ": every layer and head. Click a map to open it.";
    if (!sel) return where + ": " + q.length + " queries x " + k.length + " keys. Hover a token or a cell.";
    var pin = hm.pinned() ? "[pinned: click it again or press Esc to release] " : "";
    if (sel.side === "cell") {
      return pin + where + ": query " + sel.index + " " + JSON.stringify(q[sel.index]) + " -> key " + sel.key + " " +
        JSON.stringify(k[sel.key]) + ": " + m[sel.index][sel.key].toFixed(4);
    }
    var pairs = sel.side === "q"
      ? m[sel.index].map(function (w, j) { return [w, k[j]]; })
      : m.map(function (row, i) { return [row[sel.index], q[i]]; });
    pairs.sort(function (a, b) { return b[0] - a[0]; });
    var top = pairs.slice(0, 5).map(function (p) { return JSON.stringify(p[1]) + " " + p[0].toFixed(3); }).join(", ");
    var who = sel.side === "k" ? "key " + sel.index + " " + JSON.stringify(k[sel.index]) + " is attended by: "
                               : "query " + sel.index + " " + JSON.stringify(q[sel.index]) + " attends to: ";
    return pin + where + ": " + who + top;
  }
  function drawGrid() {
    var v = view(), cells = [], maxHeads = 0;
    v.layers.forEach(function (l) { maxHeads = Math.max(maxHeads, l.heads.length); });
    var grid = $("grid");
    grid.style.gridTemplateColumns = "auto repeat(" + maxHeads + ", auto)";
    cells.push(document.createElement("span"));
    for (var h = 0; h < maxHeads; h++) {
      var t = document.createElement("span"); t.className = "grid-head"; t.textContent = "head " + h; cells.push(t);
    }
    v.layers.forEach(function (layer, l) {
      var name = document.createElement("span"); name.className = "grid-name"; name.textContent = layer.name;
      cells.push(name);
      for (var h = 0; h < maxHeads; h++) {
        if (h >= layer.heads.length) { cells.push(document.createElement("span")); continue; }
        var c = document.createElement("canvas");
        c.className = "thumb" + (l === state.layer && h === state.head ? " current" : "");
        c.dataset.layer = String(l); c.dataset.head = String(h); c.title = layer.name + ", head " + h;
        Q.thumbnail(c, layer.heads[h], state.scale, THUMB);
        c.tabIndex = 0;
        c.addEventListener("click", open.bind(null, l, h));
        c.addEventListener("keydown", function (e) { if (e.key === "Enter") e.target.click(); });
        cells.push(c);
      }
    });
    grid.replaceChildren.apply(grid, cells);
    gridLegend.update(state.scale, null);
  }
  function refresh() {
    drawLines();
    if (state.grid) drawGrid();
    $("info").textContent = describe();
  }
  function select(v, l, h) {
    var viewChanged = v !== state.view || !ready;
    state.view = Math.max(0, Math.min(v, DATA.views.length - 1));
    state.layer = Math.max(0, Math.min(l, view().layers.length - 1));
    var n = heads().length;
    state.head = h < 0 && n > 1 ? -1 : Math.max(0, Math.min(h, n - 1));
    if (viewChanged) { hm.clear(); buildTokens(); }
    buildControls();
    hm.update(matrix(), view().queryTokens, view().keyTokens);
    refresh();
    return api.state();
  }
  function setGrid(on) {
    state.grid = !!on;
    $("single").hidden = state.grid; $("all").hidden = !state.grid;
    $("mode").textContent = state.grid ? "one head" : "all heads";
    refresh();
    return api.state();
  }
  function open(l, h) { select(state.view, l, h); return setGrid(false); }
  function setScale(mode) { state.scale = mode; hm.setScale(mode); refresh(); return api.state(); }

  hm.onChange(refresh);
  $("view").addEventListener("change", function (e) { select(+e.target.value, state.layer, state.head); });
  $("layer").addEventListener("change", function (e) { select(state.view, +e.target.value, state.head); });
  $("head").addEventListener("change", function (e) { select(state.view, state.layer, +e.target.value); });
  $("scale").addEventListener("change", function (e) { setScale(e.target.value); });
  $("mode").addEventListener("click", function () { setGrid(!state.grid); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") hm.unpin(); });

  var api = {
    select: select, setGrid: setGrid, setScale: setScale,
    hover: function (side, index, key) {
      hm.hover(side ? { side: side, index: index, key: key } : null); return api.state();
    },
    click: function (side, index, key) { hm.click({ side: side, index: index, key: key }); return api.state(); },
    state: function () {
      return JSON.parse(JSON.stringify({ view: state.view, layer: state.layer, head: state.head, scale: state.scale,
        grid: state.grid, hover: hm.hovered, pin: hm.pinned() }));
    },
    matrixImage: function () { return hm.image(); },
    linesImage: function () { return $("linecanvas").toDataURL("image/png"); },
    cellColour: function (i, j) { return hm.cellColour(i, j); }
  };
  window.qkvExplorer = api;
  select(0, DATA.views[0].layers.length - 1, 0);  // the last layer first, as the PNGs and the README
  ready = true;
  document.documentElement.dataset.qkvReady = "1";
})();
"""
