// Live charts of the node's CPU, memory, disk and network from /stats, with a few minutes of history.
import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { el, fmt, on } from "../core.js";
import { follow } from "./common.js";

/** Seconds of history the charts keep (older points are dropped). */
const HISTORY = 300;

/** How each chart reads its figures from one /stats ``system`` block. */
const CHARTS = [
  { id: "cpu", title: "CPU", unit: "pct", series: [{ label: "CPU", pick: (s) => s.cpu && s.cpu.percent }] },
  { id: "memory", title: "Memory", unit: "pct",
    series: [{ label: "Memory", pick: (s) => s.memory && s.memory.percent }] },
  { id: "disk", title: "Disk", unit: "pct", series: [{ label: "Disk", pick: (s) => rootDisk(s).percent }],
    caption: (s) => `${rootDisk(s).mountpoint || "/"}: ${fmt.bytes(rootDisk(s).free)} free` },
  { id: "network", title: "Network", unit: "rate",
    series: [{ label: "Received", pick: (s) => nicSum(s, "bytes_recv_rate") },
      { label: "Sent", pick: (s) => nicSum(s, "bytes_sent_rate") }] },
];

function rootDisk(s) {
  const disks = Array.isArray(s.disk) ? s.disk : [];
  return disks.find((d) => d.mountpoint === "/") || disks[0] || {};
}

/** Bytes per second over every interface but loopback (what leaves and enters the machine). */
function nicSum(s, key) {
  const nics = Array.isArray(s.network) ? s.network : [];
  return nics.filter((n) => n.id !== "lo").reduce((sum, n) => sum + (Number(n[key]) || 0), 0);
}

const COLORS = ["#2f7de1", "#d9730d"];

function formatter(unit) {
  return unit === "pct" ? fmt.pct : fmt.rate;
}

function makeChart(spec, host, color) {
  const fmtValue = formatter(spec.unit);
  const opts = {
    width: Math.max(200, host.clientWidth || 300),
    height: 120,
    cursor: { drag: { x: false, y: false } },
    legend: { show: false },
    // At least a minute wide: a fresh chart's few seconds would otherwise get sub-second ticks.
    scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 60), max] }, y: spec.unit === "pct" ? { range: [0, 100] } : { range: (u, min, max) => [0, Math.max(1024, max * 1.2)] } },
    axes: [
      { stroke: color, space: 70, grid: { stroke: "rgba(128,128,128,0.2)" }, ticks: { stroke: "rgba(128,128,128,0.3)" },
        values: (u, splits) => splits.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })) },
      { stroke: color, size: 64, grid: { stroke: "rgba(128,128,128,0.2)" },
        ticks: { stroke: "rgba(128,128,128,0.3)" }, values: (u, splits) => splits.map((v) => fmtValue(v)) },
    ],
    series: [{}, ...spec.series.map((s, i) => ({ label: s.label, stroke: COLORS[i], width: 2,
      fill: i === 0 ? "rgba(47,125,225,0.12)" : undefined, points: { show: false }, value: (u, v) => fmtValue(v) }))],
  };
  return new uPlot(opts, [[], ...spec.series.map(() => [])], host);
}

export function mount(section) {
  const data = { t: [], values: CHARTS.map((c) => c.series.map(() => [])) };
  const views = CHARTS.map((spec) => {
    const now = el("span", { class: "chart-now", "data-now": spec.id }, "–");
    const caption = el("span", { class: "chart-caption muted" });
    const host = el("div", { class: "chart-host", "aria-hidden": "true" });
    const figure = el("figure", { class: "chart", "data-chart": spec.id, "data-points": "0" },
      el("figcaption", {}, el("span", { class: "chart-title" }, spec.title), " ", now, " ", caption), host);
    return { spec, now, caption, host, figure, plot: null, color: "" };
  });
  const status = el("p", { class: "panel-note muted", "data-stats-status": "" }, "Waiting for the first figures…");
  const grid = el("div", { class: "charts" }, ...views.map((v) => v.figure));
  section.append(status, grid);

  // Charts are made once their box has a width (a hidden tab has none) and resized with it.
  const resize = new ResizeObserver(() => {
    for (const v of views) {
      const width = v.host.clientWidth;
      if (!width) continue;
      if (v.plot) v.plot.setSize({ width, height: 120 });
      draw(v);
    }
  });
  for (const v of views) resize.observe(v.host);

  function draw(v) {
    const width = v.host.clientWidth;
    if (!width) return;  // a hidden tab: drawn once it shows
    // Canvas text has no CSS colour: the chart is made again when the theme changes the panel's colour.
    const color = getComputedStyle(v.host).color;
    if (v.plot && v.color !== color) { v.plot.destroy(); v.plot = null; }
    if (!v.plot) { v.plot = makeChart(v.spec, v.host, color); v.color = color; v.plot.setSize({ width, height: 120 }); }
    v.plot.setData([data.t, ...data.values[CHARTS.indexOf(v.spec)]]);
  }

  function add(system, tsSeconds) {
    data.t.push(tsSeconds);
    CHARTS.forEach((spec, i) => spec.series.forEach((s, j) => {
      const value = Number(s.pick(system));
      data.values[i][j].push(Number.isFinite(value) ? value : null);
    }));
    while (data.t.length && data.t[0] < tsSeconds - HISTORY) {
      data.t.shift();
      for (const series of data.values) for (const points of series) points.shift();
    }
    views.forEach((v, i) => {
      const fmtValue = formatter(v.spec.unit);
      v.now.textContent = v.spec.series.map((s, j) => {
        const last = data.values[i][j][data.values[i][j].length - 1];
        return v.spec.series.length > 1 ? `${s.label.toLowerCase()} ${fmtValue(last)}` : fmtValue(last);
      }).join(" · ");
      v.caption.textContent = v.spec.caption ? v.spec.caption(system) : "";
      v.figure.dataset.points = String(data.t.length);
      draw(v);
    });
    const host = system.os || {};
    status.textContent = `Updated ${new Date(tsSeconds * 1000).toLocaleTimeString()}` +
      (Array.isArray(host.average_load) ? ` · load ${host.average_load.join(" / ")}` : "") +
      (host.uptime ? ` · up ${fmt.duration(host.uptime)}` : "");
  }

  const isStats = follow("/stats", (err) => { status.textContent = `No live figures: ${err.message}`; });
  on("data_generated", (ev) => {
    if (!isStats(ev) || !ev.data || !ev.data.system) return;
    add(ev.data.system, (Number(ev.data.timestamp) || Date.now()) / 1000);
  });
  on("node_changed", () => {
    data.t.length = 0;
    for (const series of data.values) for (const points of series) points.length = 0;
    status.textContent = "Waiting for the chosen node's figures…";
    for (const v of views) draw(v);
  });
}
