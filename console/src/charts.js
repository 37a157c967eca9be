// Small live charts from /metrics: the Prometheus text format parsed into totals per metric
// name, kept as a short history and drawn as SVG sparklines.

import { el } from "./render.js";

const HISTORY = 60;

// Sums every sample of each metric name (labels folded together).
export function parseMetrics(text) {
  const totals = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) totals[match[1]] = (totals[match[1]] || 0) + value;
  }
  return totals;
}

export class Series {
  constructor(label, read, { rate = false, unit = "" } = {}) {
    this.label = label;
    this.read = read;
    this.rate = rate;
    this.unit = unit;
    this.points = [];
    this.previous = null;
  }

  add(totals, seconds) {
    const value = this.read(totals);
    if (value === undefined) return;
    if (this.rate) {
      if (this.previous !== null && seconds > 0) this.points.push(Math.max(0, (value - this.previous) / seconds));
      this.previous = value;
    } else {
      this.points.push(value);
    }
    if (this.points.length > HISTORY) this.points.shift();
  }

  view() {
    const width = 240;
    const height = 48;
    const max = Math.max(1, ...this.points);
    const step = width / (HISTORY - 1);
    const path = this.points
      .map((value, index) => `${index ? "L" : "M"}${(index * step).toFixed(1)},${(height - (value / max) * (height - 4) - 2).toFixed(1)}`)
      .join(" ");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "spark");
    const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
    line.setAttribute("d", path || "M0,46");
    svg.append(line);
    const last = this.points.length ? this.points[this.points.length - 1] : 0;
    const shown = Number.isInteger(last) ? last : last.toFixed(2);
    return el("figure", { class: "chart" }, el("figcaption", {}, this.label, el("b", {}, ` ${shown}${this.unit}`)), svg);
  }
}
