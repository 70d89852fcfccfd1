// A small, dependency-free SVG trend line for one vital or lab series.
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** points: [[isoDate, value], ...] sorted by date. Returns an <svg> with an accessible label. */
export function trendChart(name, points, { width = 280, height = 96 } = {}) {
  const pad = { l: 34, r: 8, t: 10, b: 18 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "trend", role: "img" });
  const last = points[points.length - 1];
  const title = el("title");
  title.textContent = `${name}: ${points.length} values, latest ${last ? last[1] : "none"}${last ? " on " + last[0] : ""}`;
  svg.append(title);
  if (!points.length) return svg;
  const vals = points.map((p) => Number(p[1]));
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const span = hi - lo;
  lo -= span * 0.1; hi += span * 0.1;
  const times = points.map((p) => Date.parse(p[0]));
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 === t0) { t0 -= 86400000; t1 += 86400000; }
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);
  svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b, class: "axis" }));
  const fmt = (v) => (Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 10) / 10);
  for (const v of [Math.max(...vals), Math.min(...vals)]) {
    const t = el("text", { x: pad.l - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" });
    t.textContent = fmt(v);
    svg.append(t);
  }
  const d = points.map((p, n) => `${n ? "L" : "M"}${x(times[n]).toFixed(1)},${y(vals[n]).toFixed(1)}`).join(" ");
  svg.append(el("path", { d, class: "line" }));
  points.forEach((p, n) => svg.append(el("circle", { cx: x(times[n]).toFixed(1), cy: y(vals[n]).toFixed(1), r: n === points.length - 1 ? 3.5 : 2.2, class: n === points.length - 1 ? "pt last" : "pt" })));
  const d0 = el("text", { x: pad.l, y: height - 4, class: "tick" });
  d0.textContent = points[0][0];
  const d1 = el("text", { x: width - pad.r, y: height - 4, class: "tick", "text-anchor": "end" });
  d1.textContent = last[0];
  svg.append(d0, d1);
  return svg;
}
