// Sort, filter and inspect every test error of the study, offline. The rows are in the page;
// this script only reorders and hides them and draws the Grad-CAM maps of the chosen row.
// State lives in the URL (#browse?sort=-ca&true=cat&outcome=fixed&show=3), so a view can be
// shared and reopened. Allowed by the report's CSP through this file's sha256 alone.
(function () {
  "use strict";
  var table = document.getElementById("browse-table");
  var dataEl = document.getElementById("browse-data");
  if (!table || !dataEl) { return; }
  var data = JSON.parse(dataEl.textContent);
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  // maps without a prototype: keys come from the URL (#browse?show=__proto__ must find nothing)
  var byK = Object.create(null);
  rows.forEach(function (r) { byK[r.dataset.k] = r; });
  var ctl = {
    true: document.getElementById("bf-true"),
    pred: document.getElementById("bf-pred"),
    outcome: document.getElementById("bf-outcome"),
    label: document.getElementById("bf-label"),
    min: document.getElementById("bf-min")
  };
  var count = document.getElementById("browse-count");
  var state = {sort: "-ca", show: null};
  // inferno, 9 stops from matplotlib: the colormap of every Grad-CAM figure in the report
  var LUT = [[0, 0, 4], [33, 12, 74], [87, 16, 110], [138, 34, 106], [188, 55, 84],
             [228, 90, 49], [249, 142, 9], [249, 203, 53], [252, 255, 164]];
  var NUMERIC = Object.assign(Object.create(null), {index: 1, ca: 1, cb: 1, tca: 1, tcb: 1});

  function color(v) {
    var x = Math.min(Math.max(v, 0), 1) * (LUT.length - 1);
    var i = Math.min(Math.floor(x), LUT.length - 2), f = x - i;
    return [0, 1, 2].map(function (c) { return Math.round(LUT[i][c] + f * (LUT[i + 1][c] - LUT[i][c])); });
  }

  function readHash() {
    var h = window.location.hash;
    if (h.indexOf("#browse?") !== 0) { return false; }
    var q = new URLSearchParams(h.slice(8));
    ["true", "pred", "outcome", "label", "min"].forEach(function (k) {
      if (q.has(k) && ctl[k]) { ctl[k].value = q.get(k); }
    });
    if (q.has("sort")) { state.sort = q.get("sort"); }
    state.show = q.has("show") ? q.get("show") : null;
    return true;
  }

  function writeHash() {
    var q = new URLSearchParams();
    ["true", "pred", "outcome", "label", "min"].forEach(function (k) {
      if (ctl[k] && ctl[k].value) { q.set(k, ctl[k].value); }
    });
    q.set("sort", state.sort);
    if (state.show !== null) { q.set("show", state.show); }
    history.replaceState(null, "", "#browse?" + q.toString());
  }

  function matches(r) {
    var t = ctl.true.value.trim().toLowerCase(), p = ctl.pred.value.trim().toLowerCase();
    var d = r.dataset, min = parseFloat(ctl.min.value);
    if (t && d.true.toLowerCase().indexOf(t) < 0) { return false; }
    if (p && d.pa.toLowerCase().indexOf(p) < 0 && d.pb.toLowerCase().indexOf(p) < 0) { return false; }
    if (ctl.outcome.value === "baseline") {
      if (d.outcome === "newly_wrong") { return false; }
    } else if (ctl.outcome.value === "variant") {
      if (d.outcome === "fixed") { return false; }
    } else if (ctl.outcome.value && d.outcome !== ctl.outcome.value) { return false; }
    if (ctl.label.value && d.label !== ctl.label.value) { return false; }
    // confidence of the wrong prediction(s): the larger where both models are wrong
    var conf = d.outcome === "fixed" ? +d.ca : d.outcome === "newly_wrong" ? +d.cb
      : Math.max(+d.ca, +d.cb);
    return !(min > 0 && conf < min);
  }

  function apply() {
    var key = state.sort.replace(/^-/, ""), dir = state.sort.charAt(0) === "-" ? -1 : 1;
    var sorted = rows.slice().sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key], c;
      if (NUMERIC[key]) { c = (+x) - (+y); } else { c = x < y ? -1 : x > y ? 1 : 0; }
      return dir * c || (+a.dataset.k) - (+b.dataset.k);
    });
    var shown = 0;
    sorted.forEach(function (r) {
      r.hidden = !matches(r);
      if (!r.hidden) { shown += 1; }
      tbody.appendChild(r);
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      var k = th.dataset.key;
      th.setAttribute("aria-sort", k === key ? (dir < 0 ? "descending" : "ascending") : "none");
    });
    count.textContent = "Showing " + shown + " of " + rows.length + " images";
  }

  function drawMap(canvas, img, tile, map) {
    var ctx = canvas.getContext("2d"), s = canvas.width;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, tile.x, tile.y, data.tile, data.tile, 0, 0, s, s);
    if (!map) { return; }
    var h = map.length, w = map[0].length;
    var small = document.createElement("canvas");
    small.width = w; small.height = h;
    var sctx = small.getContext("2d"), px = sctx.createImageData(w, h);
    for (var i = 0; i < h; i++) {
      for (var j = 0; j < w; j++) {
        var c = color(map[i][j]), o = 4 * (i * w + j);
        px.data[o] = c[0]; px.data[o + 1] = c[1]; px.data[o + 2] = c[2]; px.data[o + 3] = 150;
      }
    }
    sctx.putImageData(px, 0, 0);
    ctx.imageSmoothingEnabled = true;  // bilinear upsampling, as the other Grad-CAM figures
    ctx.drawImage(small, 0, 0, s, s);
  }

  function show(k) {
    var r = byK[k], panel = document.getElementById("browse-detail");
    if (!r || !panel) { return; }
    state.show = k;
    rows.forEach(function (x) { x.classList.toggle("sel", x === r); });
    if (!ready) { return; }
    var img = atlas;
    var kk = +k, tile = {x: (kk % data.cols) * data.tile, y: Math.floor(kk / data.cols) * data.tile};
    var m = data.maps;
    [["bd-image", null], ["bd-a-pred", m.a_pred], ["bd-a-true", m.a_true],
     ["bd-b-pred", m.b_pred], ["bd-b-true", m.b_true]].forEach(function (e) {
      drawMap(document.getElementById(e[0]), img, tile, e[1] ? e[1][kk] : null);
    });
    var d = r.dataset;
    document.getElementById("bd-title").textContent = "Image " + d.index + ": true " + d.true;
    document.getElementById("bd-a-cap").textContent = "baseline: " + d.pa + " (" + (100 * d.ca).toFixed(1) + "%)";
    document.getElementById("bd-b-cap").textContent = "variant: " + d.pb + " (" + (100 * d.cb).toFixed(1) + "%)";
    panel.hidden = false;
    panel.dataset.drawn = k;
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (!th.dataset.key) { return; }
    th.tabIndex = 0;
    var go = function () {
      var k = th.dataset.key;
      state.sort = state.sort === "-" + k ? k : "-" + k;
      apply(); writeHash();
    };
    th.addEventListener("click", go);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { go(); } });
  });
  Object.keys(ctl).forEach(function (k) {
    ctl[k].addEventListener("input", function () { apply(); writeHash(); });
  });
  rows.forEach(function (r) {
    var go = function () { show(r.dataset.k); writeHash(); };
    r.addEventListener("click", go);
    r.addEventListener("keydown", function (e) { if (e.key === "Enter") { go(); } });
  });
  // The atlas is in the page once, as the thumbnails' CSS background; the maps are drawn from
  // the same data: URL.
  var atlas = new Image(), thumb = tbody.querySelector(".thumb");
  var url = thumb ? /url\("?(.*?)"?\)$/.exec(getComputedStyle(thumb).backgroundImage) : null;
  var ready = false;
  atlas.addEventListener("load", function () {
    ready = true;
    if (state.show !== null) { show(state.show); }
  });
  if (url) { atlas.src = url[1]; }
  function toBrowser() { document.getElementById("browse").scrollIntoView(); }
  var fromHash = readHash();
  apply();
  if (fromHash) {
    toBrowser();
    // figures above may still change the layout while they load: scroll again once they have
    window.addEventListener("load", toBrowser);
  }
  // a #browse?... link inside the report changes only the hash: filter and go there too
  window.addEventListener("hashchange", function () {
    if (readHash()) {
      apply();
      if (state.show !== null) { show(state.show); }
      toBrowser();
    }
  });
})();
