// cbloop dashboard: small SVG charts drawn from the JSON spec embedded in each <figure>,
// hover tooltips, and times shown in the viewer's time zone. No dependencies.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626"];
  var W = 560, H = 250, M = { l: 58, r: 14, t: 14, b: 46 };
  var REFRESH_MS = 60000;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function localTime(iso, short) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    return short ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
                 : d.toLocaleString();
  }

  function convertTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var iso = t.getAttribute("datetime");
      var d = new Date(iso);
      if (!isNaN(d.getTime())) { t.textContent = d.toLocaleString(); t.title = iso + " (UTC)"; }
    });
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    root.querySelectorAll(".tz").forEach(function (s) { s.textContent = zone; });
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (Math.abs(v) >= 100) return Math.round(v).toLocaleString();
    if (Math.abs(v) >= 10) return v.toFixed(1);
    return v.toFixed(3);
  }

  function ticks(lo, hi, count) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
    return out;
  }

  function categories(spec) {
    var seen = [];
    spec.series.forEach(function (s) {
      s.points.forEach(function (p) { if (seen.indexOf(p.x) < 0) seen.push(p.x); });
    });
    return seen;
  }

  function yDomain(spec) {
    var lo = Infinity, hi = -Infinity;
    spec.series.forEach(function (s) {
      s.points.forEach(function (p) {
        [p.y, p.low, p.high].forEach(function (v) {
          if (typeof v === "number" && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        });
      });
    });
    if (spec.kind === "bar" || spec.y_label === "events" || spec.y_label === "rewards") lo = Math.min(lo, 0);
    if (lo === hi) { lo -= lo === 0 ? 0 : Math.abs(lo) * 0.1; hi += hi === 0 ? 1 : Math.abs(hi) * 0.1; }
    var pad = (hi - lo) * 0.06;
    return [lo < 0 || lo - pad >= 0 ? lo - pad : 0, hi + pad];
  }

  function draw(fig, spec) {
    var plot = fig.querySelector(".plot");
    plot.textContent = "";
    var total = spec.series.reduce(function (n, s) { return n + s.points.length; }, 0);
    fig.setAttribute("data-points", String(total));
    if (!total) {
      var p = document.createElement("p"); p.className = "empty"; p.textContent = "no data yet";
      plot.appendChild(p); fig.setAttribute("data-drawn", "0"); return;
    }
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": spec.title }, plot);
    var iw = W - M.l - M.r, ih = H - M.t - M.b;
    var yd = yDomain(spec);
    var Y = function (v) { return M.t + ih - (v - yd[0]) / (yd[1] - yd[0]) * ih; };
    var X, cats = null, band = 0;
    if (spec.x === "time") {
      var xs = [];
      spec.series.forEach(function (s) { s.points.forEach(function (q) { xs.push(Date.parse(q.x)); }); });
      var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
      if (x0 === x1) { x0 -= 30000; x1 += 30000; }
      X = function (v) { return M.l + (Date.parse(v) - x0) / (x1 - x0) * iw; };
      ticks(x0, x1, 5).forEach(function (t) {
        var px = M.l + (t - x0) / (x1 - x0) * iw;
        el("line", { x1: px, x2: px, y1: M.t + ih, y2: M.t + ih + 4, "class": "tick" }, svg);
        var label = el("text", { x: px, y: M.t + ih + 16, "text-anchor": "middle", "class": "axis" }, svg);
        label.textContent = localTime(new Date(t).toISOString(), (x1 - x0) < 86400000);
      });
    } else {
      cats = categories(spec);
      band = iw / cats.length;
      X = function (v) { return M.l + band * (cats.indexOf(v) + 0.5); };
      cats.forEach(function (c) {
        var label = el("text", { x: X(c), y: M.t + ih + 16, "text-anchor": "middle", "class": "axis" }, svg);
        label.textContent = String(c);
      });
    }
    ticks(yd[0], yd[1], 5).forEach(function (t) {
      el("line", { x1: M.l, x2: M.l + iw, y1: Y(t), y2: Y(t), "class": "gridline" }, svg);
      var label = el("text", { x: M.l - 6, y: Y(t) + 4, "text-anchor": "end", "class": "axis" }, svg);
      label.textContent = fmt(t);
    });
    var ylabel = el("text", { x: 12, y: M.t + ih / 2, "class": "axis", transform: "rotate(-90 12 " + (M.t + ih / 2) + ")", "text-anchor": "middle" }, svg);
    ylabel.textContent = spec.y_label;

    var marks = [];
    var nseries = spec.series.length;
    spec.series.forEach(function (s, si) {
      var color = COLORS[si % COLORS.length];
      var g = el("g", { "class": "series", "data-series": s.name }, svg);
      var offset = spec.x === "time" ? 0 : (si - (nseries - 1) / 2) * Math.min(18, band / (nseries + 1));
      var px = function (q) { return X(q.x) + offset; };
      if (spec.kind === "line") {
        var withBand = s.points.filter(function (q) { return q.low !== null && q.low !== undefined; });
        if (withBand.length > 1) {
          var top = withBand.map(function (q) { return px(q) + "," + Y(q.high); });
          var bottom = withBand.slice().reverse().map(function (q) { return px(q) + "," + Y(q.low); });
          el("polygon", { points: top.concat(bottom).join(" "), fill: color, "class": "band" }, g);
        }
        if (s.points.length > 1) {
          el("polyline", { points: s.points.map(function (q) { return px(q) + "," + Y(q.y); }).join(" "),
                           stroke: color, "class": "line" }, g);
        }
      }
      s.points.forEach(function (q) {
        var cx = px(q), cy = Y(q.y), mark;
        if (spec.kind === "bar") {
          var bw = Math.max(4, band * 0.7 / nseries);
          mark = el("rect", { x: cx - bw / 2, y: Math.min(cy, Y(0)), width: bw, height: Math.abs(Y(0) - cy),
                              fill: color, "class": "pt" }, g);
        } else {
          if (q.low !== null && q.low !== undefined && spec.kind === "interval") {
            el("line", { x1: cx, x2: cx, y1: Y(q.low), y2: Y(q.high), stroke: color, "class": "whisker" }, g);
            el("line", { x1: cx - 5, x2: cx + 5, y1: Y(q.low), y2: Y(q.low), stroke: color, "class": "whisker" }, g);
            el("line", { x1: cx - 5, x2: cx + 5, y1: Y(q.high), y2: Y(q.high), stroke: color, "class": "whisker" }, g);
          }
          mark = el("circle", { cx: cx, cy: cy, r: spec.kind === "interval" ? 4.5 : 3, fill: color, "class": "pt" }, g);
        }
        var xText = spec.x === "time" ? localTime(q.x) : String(q.x);
        var text = s.name + " · " + xText + ": " + fmt(q.y);
        if (q.low !== null && q.low !== undefined) text += " [" + fmt(q.low) + ", " + fmt(q.high) + "]";
        if (q.n !== undefined) text += " (n=" + q.n + ")";
        mark.setAttribute("data-tip", text);
        marks.push({ x: cx, y: cy, node: mark, text: text });
      });
    });
    if (nseries > 1) {
      spec.series.forEach(function (s, si) {
        var lx = M.l + si * 150, ly = H - 8;
        el("rect", { x: lx, y: ly - 9, width: 10, height: 10, fill: COLORS[si % COLORS.length] }, svg);
        var t = el("text", { x: lx + 14, y: ly, "class": "legend" }, svg);
        t.textContent = s.name;
      });
    }
    var tip = document.createElement("div");
    tip.className = "tooltip"; tip.hidden = true; plot.appendChild(tip);
    var hot = null;
    svg.addEventListener("mousemove", function (ev) {
      var box = svg.getBoundingClientRect();
      var mx = (ev.clientX - box.left) / box.width * W, my = (ev.clientY - box.top) / box.height * H;
      var best = null, bestD = Infinity;
      marks.forEach(function (m) {
        var d = Math.abs(m.x - mx) * 4 + Math.abs(m.y - my);
        if (d < bestD) { bestD = d; best = m; }
      });
      if (hot) hot.node.classList.remove("hot");
      hot = best;
      if (!best) return;
      best.node.classList.add("hot");
      tip.textContent = best.text; tip.hidden = false;
      var left = best.x / W * box.width, topPx = best.y / H * box.height;
      tip.style.left = Math.min(left + 12, box.width - 220) + "px";
      tip.style.top = Math.max(topPx - 34, 0) + "px";
    });
    svg.addEventListener("mouseleave", function () {
      tip.hidden = true; if (hot) hot.node.classList.remove("hot"); hot = null;
    });
    fig.setAttribute("data-drawn", String(marks.length));
  }

  function refresh(fig) {
    var url = fig.getAttribute("data-api");
    if (!url || location.protocol.indexOf("http") !== 0) return;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (spec) { if (spec && spec.series) draw(fig, spec); })
      .catch(function () { /* the next refresh tries again */ });
  }

  function start() {
    convertTimes(document);
    document.querySelectorAll("figure.chart").forEach(function (fig) {
      var script = fig.querySelector("script.spec");
      draw(fig, JSON.parse(script.textContent));
      window.setInterval(function () { refresh(fig); }, REFRESH_MS);
    });
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
