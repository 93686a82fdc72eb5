// Tessera's live dashboard: polls /api/snapshot and redraws. No framework, no CDN: text
// goes in with textContent (never markup from data), charts are SVG built here.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmt(x, digits) {
  if (x === null || x === undefined || x === "") return "–";
  const n = Number(x);
  return Number.isFinite(n) ? n.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits}) : String(x);
}

function fillTable(id, rows, cells, emptyText) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    tr.append(el("td", {colspan: document.querySelectorAll(`#${id} thead th`).length, class: "empty"}, emptyText || "none yet"));
    body.append(tr);
    return;
  }
  for (const r of rows) {
    const tr = el("tr");
    for (const [key, text, cls] of cells(r)) {
      const td = el("td", {class: cls || "", "data-k": key}, text);
      tr.append(td);
    }
    if (r.__id) tr.setAttribute("data-id", r.__id);
    body.append(tr);
  }
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(v);
  return ticks;
}

function clock(epochS, seconds) {
  return new Date(epochS * 1000).toISOString().slice(11, seconds ? 19 : 16);
}

// A line chart with time on x (UTC epoch seconds), optional shaded band, axis labels with units.
function lineChart(svg, {series, band, yLabel, xLabel}) {
  svg.replaceChildren();
  const W = 660, H = 260, L = 62, R = 165, T = 10, B = 42;
  const pts = series.flatMap(s => s.points).concat(band ? band.map(b => [b[0], b[1]]).concat(band.map(b => [b[0], b[3]])) : []);
  if (!pts.length) {
    svg.append(el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis-label"}, "no data yet"));
    return;
  }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) > x0 ? Math.max(...xs) : x0 + 60;
  const y1 = Math.max(...ys, 0) * 1.08 || 1;
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => H - B - y / y1 * (H - T - B);
  const grid = el("svg:g", {class: "grid"}), axis = el("svg:g", {class: "axis"});
  for (const v of niceTicks(0, y1, 5)) {
    grid.append(el("svg:line", {x1: L, x2: W - R, y1: sy(v), y2: sy(v)}));
    axis.append(el("svg:text", {x: L - 6, y: sy(v) + 4, "text-anchor": "end"}, fmt(v, v < 10 && v % 1 ? 2 : 0)));
  }
  const span = x1 - x0, step = [10, 15, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400].find(s => span / s <= 7) || 86400;
  for (let v = Math.ceil(x0 / step) * step; v <= x1; v += step) {
    grid.append(el("svg:line", {x1: sx(v), x2: sx(v), y1: T, y2: H - B}));
    axis.append(el("svg:text", {x: sx(v), y: H - B + 15, "text-anchor": "middle"}, clock(v, step < 60)));
  }
  axis.append(el("svg:line", {x1: L, x2: W - R, y1: H - B, y2: H - B}));
  axis.append(el("svg:line", {x1: L, x2: L, y1: T, y2: H - B}));
  svg.append(grid, axis);
  svg.append(el("svg:text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label"}, xLabel));
  svg.append(el("svg:text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle", class: "axis-label",
                             transform: `rotate(-90 14 ${(T + H - B) / 2})`}, yLabel));
  const legend = el("svg:g", {class: "legend"});
  let ly = T + 8;
  if (band && band.length) {
    const d = band.map(b => `${sx(b[0])},${sy(b[3])}`).concat(band.slice().reverse().map(b => `${sx(b[0])},${sy(b[1])}`));
    svg.append(el("svg:polygon", {points: d.join(" "), fill: "#1f77b4", "fill-opacity": 0.15, stroke: "none"}));
    legend.append(el("svg:rect", {x: W - R + 10, y: ly - 7, width: 16, height: 9, fill: "#1f77b4", "fill-opacity": 0.25}));
    legend.append(el("svg:text", {x: W - R + 32, y: ly + 1}, "5–95 % band"));
    ly += 16;
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    if (!s.points.length) return;
    svg.append(el("svg:polyline", {points: s.points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none",
                                   stroke: color, "stroke-width": 1.8, "stroke-dasharray": s.dash || ""}));
    legend.append(el("svg:line", {x1: W - R + 10, x2: W - R + 26, y1: ly - 3, y2: ly - 3, stroke: color,
                                  "stroke-width": 2, "stroke-dasharray": s.dash || ""}));
    legend.append(el("svg:text", {x: W - R + 32, y: ly + 1}, s.name));
    ly += 16;
  });
  svg.append(legend);
}

function demandUnit(series) {
  if (series.endsWith("dim=vcpu")) return "vCPU requested per interval";
  if (series.endsWith("dim=memory_gib")) return "GiB requested per interval";
  if (series.endsWith("dim=gpu")) return "GPUs requested per interval";
  return "demand per interval";
}

function render(s) {
  document.body.setAttribute("data-as-of", s.as_of);
  const status = document.getElementById("status");
  status.textContent = `database ${s.database} · updated ${s.as_of.slice(11, 19)} UTC`;
  status.className = "";
  const o = s.outcomes, c = s.cost;
  const waiting = Object.values(o.waiting).reduce((a, b) => a + b, 0);
  document.getElementById("kpi-placed").textContent = fmt(o.placed, 0);
  document.getElementById("kpi-waiting").textContent = fmt(waiting, 0);
  document.getElementById("kpi-rejected").textContent = fmt(o.rejected_total, 0);
  document.getElementById("kpi-cost").textContent = fmt(c.total_usd_per_hour, 2);
  document.getElementById("kpi-own-only").textContent = fmt(c.own_only_usd_per_hour, 2);
  document.getElementById("kpi-cheapest").textContent = fmt(c.cheapest_partner_usd_per_hour, 2);
  document.getElementById("kpi-vcpu").textContent = fmt(c.vcpu_in_use, 0);

  const start = s.cost_timeline.start;
  const cost = Object.entries(s.cost_timeline.series).map(([name, pts]) => ({name, points: pts.map(p => [start + p[0], p[1]])}));
  const xsNow = cost.length ? cost[0].points.map(p => p[0]) : [];
  if (xsNow.length && c.own_only_usd_per_hour !== null) {
    // The alternatives at the current vCPU, for scale (what the same work would cost now).
    const last = xsNow[xsNow.length - 1];
    cost.push({name: "own only, now", dash: "5 4", color: "#555", points: [[xsNow[0], Number(c.own_only_usd_per_hour)], [last, Number(c.own_only_usd_per_hour)]]});
    if (c.cheapest_partner_usd_per_hour !== null)
      cost.push({name: "cheapest partner, now", dash: "2 3", color: "#999", points: [[xsNow[0], Number(c.cheapest_partner_usd_per_hour)], [last, Number(c.cheapest_partner_usd_per_hour)]]});
  }
  lineChart(document.getElementById("chart-cost"), {series: cost, yLabel: "cost rate (USD / hour)", xLabel: "time (UTC)"});

  const f = s.forecast;
  if (f) {
    document.getElementById("forecast-title").textContent = `Forecast band vs realised demand: ${f.series}`;
    lineChart(document.getElementById("chart-forecast"), {
      series: [{name: "realised", points: f.actual, color: "#d62728"}, {name: "median forecast", points: f.band.map(b => [b[0], b[2]]), color: "#1f77b4", dash: "4 3"}],
      band: f.band, yLabel: demandUnit(f.series), xLabel: "interval start (UTC)"});
  } else {
    lineChart(document.getElementById("chart-forecast"), {series: [], yLabel: "demand", xLabel: "time (UTC)"});
  }

  document.getElementById("resources-count").textContent = `${s.resources.length} in service`;
  fillTable("resources", s.resources.map(r => ({...r, __id: r.resource_id})), r => [
    ["resource_id", r.resource_id], ["provider", r.provider], ["region", r.region],
    ["health", r.health, `health-${r.health}`], ["vcpu", fmt(r.vcpu, 0), "n"], ["vcpu_free", fmt(r.vcpu_free, 1), "n"],
    ["gpu", fmt(r.gpu, 0), "n"], ["gpu_free", fmt(r.gpu_free, 0), "n"], ["price_per_hour", fmt(r.price_per_hour, 4), "n"]]);
  fillTable("rejections", Object.entries(o.rejected).map(([code, n]) => ({code, n, __id: code})),
            r => [["code", r.code], ["n", fmt(r.n, 0), "n"]], "no rejections");
  const tiers = ["platinum", "gold", "silver", "bronze"];
  const waits = Object.fromEntries(o.waits.map(w => [w.sla_tier, w]));
  fillTable("waits", tiers.filter(t => waits[t] || o.waiting[t]).map(t => ({t, w: waits[t] || {}, __id: t})), r => [
    ["tier", r.t], ["placed", fmt(r.w.placed, 0), "n"], ["waiting", fmt(o.waiting[r.t] || 0, 0), "n"],
    ["p50_s", fmt(r.w.p50_s, 1), "n"], ["p99_s", fmt(r.w.p99_s, 1), "n"], ["max_s", fmt(r.w.max_s, 1), "n"]]);
  fillTable("bills", s.bills.map(b => ({...b, __id: `${b.partner}/${b.period}`})), b => [
    ["partner", b.partner], ["period", b.period], ["amount", fmt(b.amount, 2), "n"], ["currency", b.currency]], "no partner usage yet");
  fillTable("alerts", s.alerts, a => [["at", a.at.slice(0, 19)], ["partner", a.partner], ["limit", a.limit_name],
    ["pct", fmt(a.threshold_pct, 0), "n"], ["enforcement", a.lifted ? "lifted" : a.enforcement]], "no alerts");
  fillTable("hints", s.hints, h => [["pool", h.pool], ["needed_by", h.needed_by.slice(0, 19)],
    ["shortfall", fmt(h.shortfall_vcpu, 1), "n"], ["n", fmt(h.suggested_resources, 0), "n"],
    ["cost", fmt(h.suggested_cost_per_hour, 4), "n"]], "no hints");
  fillTable("migrations", s.migrations, m => [["planned_at", m.planned_at.slice(0, 19)], ["reason", m.reason],
    ["route", `${m.source_resource_id} → ${m.target_resource_id}`], ["status", m.status],
    ["saving", fmt(m.expected_saving_per_hour, 4), "n"]], "no migrations");
}

async function tick() {
  try {
    const resp = await fetch("/api/snapshot", {cache: "no-store"});
    const doc = await resp.json();
    if (!resp.ok) throw new Error(doc.error || resp.statusText);
    render(doc);
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = `not updating: ${err.message}`;
    status.className = "stale";
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}

tick();
