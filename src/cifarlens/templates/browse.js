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
  var names = data.names || [];

  // base64 -> bytes: the maps (uint8, value x 255) and the neighbours (uint16 labels, uint8
  // similarities) are packed so the report stays small (study/browse.py, browse_neighbours.py)
  function bytes(b64) {
    var s = atob(b64 || ""), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }
  var M = data.maps || {}, shape = M.shape || [0, 0, 0], packed = Object.create(null);
  ["a_pred", "a_true", "b_pred", "b_true"].forEach(function (key) { packed[key] = bytes(M[key]); });
  var NB = data.neighbours, nbLabels = null, nbSims = null;
  if (NB) { nbLabels = bytes(NB.labels); nbSims = bytes(NB.sims); }

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

  // row kk's map of one kind, as a function (i, j) -> [0, 1]; null without maps
  function mapOf(key, kk) {
    var b = packed[key], h = shape[1], w = shape[2];
    if (!b || !b.length || kk >= shape[0]) { return null; }
    return {h: h, w: w, at: function (i, j) { return b[(kk * h + i) * w + j] / 255; }};
  }

  function tileXY(t) {
    return {x: (t % data.cols) * data.tile, y: Math.floor(t / data.cols) * data.tile};
  }

  function drawMap(canvas, img, tile, map) {
    var ctx = canvas.getContext("2d"), s = canvas.width;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, tile.x, tile.y, data.tile, data.tile, 0, 0, s, s);
    if (!map) { return; }
    var h = map.h, w = map.w;
    var small = document.createElement("canvas");
    small.width = w; small.height = h;
    var sctx = small.getContext("2d"), px = sctx.createImageData(w, h);
    for (var i = 0; i < h; i++) {
      for (var j = 0; j < w; j++) {
        var c = color(map.at(i, j)), o = 4 * (i * w + j);
        px.data[o] = c[0]; px.data[o + 1] = c[1]; px.data[o + 2] = c[2]; px.data[o + 3] = 150;
      }
    }
    sctx.putImageData(px, 0, 0);
    ctx.imageSmoothingEnabled = true;  // bilinear upsampling, as the other Grad-CAM figures
    ctx.drawImage(small, 0, 0, s, s);
  }

  // One row's nearest training images, of the predicted and of the true class, in the feature
  // space of a model that gets it wrong: label and similarity, a thumbnail where the atlas has one
  function showNeighbours(kk, d) {
    var box = document.getElementById("bd-neighbours");
    if (!box) { return; }
    box.textContent = "";
    var of = NB ? NB.of.charAt(kk) : "-";
    if (of !== "a" && of !== "b") { box.hidden = true; return; }
    var k = NB.k, model = of === "a" ? "baseline" : "variant";
    var pred = of === "a" ? d.pa : d.pb, tiles = Object.prototype.hasOwnProperty.call(NB.tiles, String(kk)) ? NB.tiles[String(kk)] : null;
    var lead = document.createElement("p");
    lead.textContent = "The " + k + " training images the " + model + " represents most like this image, of its predicted class (" +
      pred + ") and of the true class (" + d.true + "), most similar first: images the model represents alike, not a cause of the error.";
    box.appendChild(lead);
    [["predicted: " + pred, 0], ["true: " + d.true, 1]].forEach(function (side) {
      var line = document.createElement("div"), head = document.createElement("span");
      line.className = "bd-nb-line"; head.className = "bd-nb-head"; head.textContent = side[0];
      line.appendChild(head);
      for (var j = 0; j < k; j++) {
        var at = (kk * 2 + side[1]) * k + j, lab = nbLabels[2 * at] | (nbLabels[2 * at + 1] << 8);
        if (lab === 65535) { continue; }
        var sim = nbSims[at] / 127.5 - 1, cell = document.createElement("figure");
        var t = tiles ? tiles[side[1] * k + j] : -1;
        if (t >= 0) {
          var th = document.createElement("span"), xy = tileXY(t);
          th.className = "thumb";
          th.style.backgroundPosition = "-" + xy.x + "px -" + xy.y + "px";
          cell.appendChild(th);
        }
        var cap = document.createElement("figcaption");
        cap.textContent = (names[lab] !== undefined ? names[lab] : String(lab)) + " " + sim.toFixed(2);
        cell.appendChild(cap);
        line.appendChild(cell);
      }
      box.appendChild(line);
    });
    box.hidden = false;
  }

  function show(k) {
    var r = byK[k], panel = document.getElementById("browse-detail");
    if (!r || !panel) { return; }
    state.show = k;
    rows.forEach(function (x) { x.classList.toggle("sel", x === r); });
    if (!ready) { return; }
    var img = atlas;
    var kk = +k, tile = tileXY(kk);
    [["bd-image", null], ["bd-a-pred", "a_pred"], ["bd-a-true", "a_true"],
     ["bd-b-pred", "b_pred"], ["bd-b-true", "b_true"]].forEach(function (e) {
      drawMap(document.getElementById(e[0]), img, tile, e[1] ? mapOf(e[1], kk) : null);
    });
    var d = r.dataset;
    showNeighbours(kk, d);
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
