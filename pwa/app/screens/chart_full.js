// The full chart (issue 18 item 5): allergy banner + age on every patient screen, flagged vitals, trends,
// lab reports with their results, problems with add/resolve, notes with author and time, and the rest of the
// record in collapsed sections with counts. Every decision (flags, grouping, geometry, words) is Python's
// (pyclient.views.fullchart / chart_forms); this file only draws.
import { h } from "../ui.js";

const NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

/** The strip at the top of every patient screen: who, age, and the allergy state in words and colour. */
export function patientBanner(c) {
  const p = c.patient;
  const b = c.banner || { age: "", allergies: { state: "unassessed", text: "Allergies not yet assessed" } };
  const a = b.allergies;
  const label = { allergies: "Allergies", nka: "No known allergies", unassessed: "Not assessed" }[a.state];
  return h("section", { class: "patient-banner", id: "patient-banner", "aria-label": "Patient" },
    h("div", { class: "pb-who" },
      h("strong", { class: "pb-name" }, p.display),
      h("span", { class: "pb-facts" },
        h("span", { id: "patient-age" }, b.age ? `${b.age}` : "age unknown"), " · ",
        h("span", {}, p.gender || "sex not recorded"), " · ",
        h("span", {}, p.birthDate ? `born ${p.birthDate}` : "birth date unknown"), " · ",
        h("span", {}, p.mrn || "no MRN"))),
    h("div", { class: `allergy-banner ${a.state}`, id: "allergy-banner", role: "note", dataset: { state: a.state } },
      h("span", { class: "ab-icon", "aria-hidden": "true" }, a.state === "allergies" ? "⚠" : a.state === "nka" ? "✓" : "?"),
      h("span", { class: "sr-only" }, label + ": "),
      h("span", {}, a.text)));
}

/** A trend chart drawn 1:1 from its view model (text at 12-13 px, units on the axis, both BP lines). */
export function trendSvg(t) {
  const svg = s("svg", { viewBox: `0 0 ${t.width} ${t.height}`, width: t.width, height: t.height, class: "trend trend2", role: "img",
    "aria-label": t.summary, id: t.id });
  svg.append(s("title", {}, t.summary));
  const P = t.plot;
  if (t.band) svg.append(s("rect", { x: P.left, y: t.band.top, width: P.right - P.left, height: Math.max(0, t.band.bottom - t.band.top), class: "band" }));
  for (const tk of t.yTicks) {
    svg.append(s("line", { x1: P.left, x2: P.right, y1: tk.y, y2: tk.y, class: "grid" }));
    svg.append(s("text", { x: P.left - 6, y: tk.y + 4, "text-anchor": "end", class: "tick" }, tk.label));
  }
  svg.append(s("line", { x1: P.left, x2: P.left, y1: P.top, y2: P.bottom, class: "axis" }));
  svg.append(s("line", { x1: P.left, x2: P.right, y1: P.bottom, y2: P.bottom, class: "axis" }));
  t.xTicks.forEach((tk, n) => svg.append(s("text", { x: tk.x, y: P.bottom + 18, class: "tick",
    "text-anchor": t.xTicks.length > 1 && n === 0 ? "start" : n === t.xTicks.length - 1 && n > 0 ? "end" : "middle" }, tk.label)));
  svg.append(s("text", { x: 4, y: 16, class: "unit" }, t.yLabel));
  svg.append(s("text", { x: (P.left + P.right) / 2, y: t.height - 6, "text-anchor": "middle", class: "unit" }, t.xLabel));
  for (const ln of t.lines) {
    const d = ln.points.map((p, n) => `${n ? "L" : "M"}${p.x},${p.y}`).join(" ");
    svg.append(s("path", { d, class: `line ${ln.class}` }));
    for (const p of ln.points) {
      const c = s("circle", { cx: p.x, cy: p.y, r: 3.5, class: `pt ${ln.class}` });
      c.append(s("title", {}, `${ln.label} ${p.value} ${t.unit} on ${p.when}`));
      svg.append(c);
    }
  }
  if (t.lines.length > 1) { // legend, in words as well as colour
    let x = P.left + 4;
    for (const ln of t.lines) {
      svg.append(s("line", { x1: x, x2: x + 18, y1: 14, y2: 14, class: `line ${ln.class}` }));
      svg.append(s("text", { x: x + 22, y: 18, class: "legend" }, ln.label));
      x += 30 + ln.label.length * 8;
    }
  }
  return h("figure", { class: "trend-fig" }, svg, h("figcaption", {}, `${t.title} (${t.unit})`));
}

function flagBadge(v) {
  if (!v.abnormal) return null;
  return h("span", { class: `badge flag${v.critical ? " critical" : ""}` }, v.words || "abnormal");
}

/** A section whose list shows the newest ``limit`` rows; the rest open on demand. Count in the heading. */
export function listSection(title, id, rows, render, { total, limit = 5, empty, action, note } = {}) {
  const n = total ?? rows.length;
  const head = h("div", { class: "card-head" }, h("h2", {}, title, " ", h("span", { class: "count" }, `(${n})`)), action || null);
  if (!rows.length) return h("section", { class: "card", id: `${id}-section` }, head, note || null, h("p", { class: "empty" }, empty));
  const first = rows.slice(0, limit), rest = rows.slice(limit);
  const more = n > rows.length ? ` (latest ${rows.length} on this screen)` : "";
  return h("section", { class: "card", id: `${id}-section` }, head, note || null,
    h("ul", { class: "rows", id }, first.map(render)),
    rest.length ? h("details", { class: "more" }, h("summary", {}, `Show ${rest.length} older${more}`),
      h("ul", { class: "rows" }, rest.map(render))) : null);
}

export function vitalsSection(c, { pendingBadge, unverified }) {
  const rows = c.flaggedVitals || [];
  const trends = (c.trends || []);
  return h("section", { class: "card", id: "vitals-section" },
    h("div", { class: "card-head" }, h("h2", {}, "Recent vitals")), unverified,
    rows.length ? h("table", { class: "obs", id: "vitals" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Measurement"), h("th", { scope: "col" }, "Latest"), h("th", { scope: "col" }, "When"))),
      h("tbody", {}, rows.map((v) => h("tr", { class: v.critical ? "critical" : v.abnormal ? "abnormal" : "", dataset: { id: v.id, flag: v.flag } },
        h("th", { scope: "row" }, v.name), h("td", {}, v.value, " ", flagBadge(v), " ", pendingBadge(v)), h("td", {}, v.when)))))
      : h("p", { class: "empty" }, "No vitals recorded."),
    rows.length ? h("p", { class: "muted small-note" }, c.rangesNote) : null,
    trends.length ? h("div", { class: "trends2", id: "trends" }, trendSvg(trends[0])) : null, // BP first, the rest on demand
    trends.length > 1 ? h("details", { class: "more", id: "more-trends" }, h("summary", {}, `More trends (${trends.length - 1})`),
      h("div", { class: "trends2" }, trends.slice(1).map(trendSvg))) : null);
}

export function problemsSection(c, { can, pid, pendingBadge, unverified }) {
  const pl = c.problemList || { active: [], past: [], counts: { active: 0, past: 0 } };
  const row = (x) => h("li", { class: x.resolvable ? "" : "inactive", dataset: { id: x.id } },
    h("div", { class: "grow" }, h("strong", {}, x.text),
      h("small", {}, (x.onset ? ` since ${x.onset}` : "") + (x.resolved ? ` · resolved ${x.resolved}` : "")), " ", pendingBadge(x)),
    h("span", { class: `badge ${x.resolvable ? "active" : ""}` }, x.status),
    x.resolvable && can.resolveProblem ? h("a", { class: "btn small ghost", href: `#/patient/${pid}/problem-resolve/${encodeURIComponent(x.id)}` }, "Resolve") : null);
  return h("section", { class: "card", id: "problems-section" },
    h("div", { class: "card-head" }, h("h2", {}, "Problems ", h("span", { class: "count" }, `(${pl.counts.active} active)`)),
      can.addProblem ? h("a", { class: "btn small", href: `#/patient/${pid}/problem` }, "Add problem") : null),
    unverified,
    pl.active.length ? h("ul", { class: "rows", id: "problems" }, pl.active.map(row)) : h("p", { class: "empty", id: "problems" }, "No active problems recorded."),
    pl.past.length ? h("details", { class: "more", id: "past-problems" }, h("summary", {}, `Resolved and inactive (${pl.past.length})`),
      h("ul", { class: "rows" }, pl.past.map(row))) : null);
}

export function notesSection(c, { pendingBadge, unverified }) {
  return listSection("Notes", "notes", c.noteRows || [], (n) => h("li", { class: "note", dataset: { id: n.id } },
    h("details", {}, h("summary", {}, h("strong", {}, n.title), h("small", { class: "byline" }, ` ${n.author} · ${n.when || "time not recorded"}`), " ", pendingBadge(n)),
      h("pre", {}, n.text || "(no text)"))), { empty: "No notes.", note: unverified, limit: 5 });
}

export function reportsSection(c, { pendingBadge }) {
  const reports = c.labReports || [];
  const render = (r) => h("li", { class: "report", dataset: { id: r.id } },
    h("details", { open: reports.indexOf(r) === 0 },
      h("summary", {}, h("strong", {}, r.name), h("small", {}, " " + (r.when || "")), " ",
        h("span", { class: `badge ${r.status === "final" ? "active" : ""}` }, r.status === "final" ? "final" : r.status || "status unknown"),
        r.abnormal ? h("span", { class: "badge flag" }, `${r.abnormal} abnormal`) : null, " ", pendingBadge(r)),
      r.results.length ? h("table", { class: "obs" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Result"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "Range"))),
        h("tbody", {}, r.results.map((x) => h("tr", { class: x.critical ? "critical" : x.abnormal ? "abnormal" : "" },
          h("th", { scope: "row" }, x.name), h("td", {}, x.value, " ", flagBadge(x)), h("td", {}, x.range || "—")))))
        : h("p", { class: "empty" }, "No results yet."),
      r.conclusion ? h("p", { class: "conclusion" }, r.conclusion) : null,
      r.performer ? h("p", { class: "muted" }, "Reported by " + r.performer) : null));
  return h("div", {}, listSection("Lab reports", "reports", reports, render, { empty: "No lab reports.", limit: 3 }),
    (c.otherReports || []).length ? listSection("Other reports", "other-reports", c.otherReports, (r) => h("li", { dataset: { id: r.id } },
      h("div", { class: "grow" }, h("strong", {}, r.name), h("small", {}, " " + (r.when || "")))), { limit: 3 }) : null);
}

export function dispensesSection(c, { pendingBadge }) {
  const rows = c.dispenses || [];
  if (!rows.length) return null;
  return listSection("Dispenses", "dispenses", rows, (d) => h("li", { dataset: { id: d.id } },
    h("div", { class: "grow" }, h("strong", {}, d.what), h("small", {}, ` ${d.amount ? d.amount + " · " : ""}${d.when || "not handed over yet"}`), " ", pendingBadge(d)),
    h("span", { class: "badge" }, d.status)), { limit: 5 });
}

/** Every other kind of record the chart holds (devices, goals, care plans, ...), one collapsed list per kind. */
export function otherSections(c, { pendingBadge }) {
  return (c.otherRecords || []).map((g) => listSection(g.title, g.id, g.rows, (r) => h("li", { dataset: { id: r.id } },
    h("div", { class: "grow" }, h("strong", {}, r.text), h("small", {}, r.when ? " " + r.when : "")), " ", pendingBadge(r),
    r.status ? h("span", { class: "badge" }, r.status) : null), { limit: 3 }));
}
