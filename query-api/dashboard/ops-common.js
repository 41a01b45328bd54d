// What the operator screens share: the admin check, the operators' sub-navigation, live
// refreshes from the admin feed, a small SVG trend line, durations, and JSON shown as text.

import { getJson, live, Problem } from './api.js';
import { h, pageHeader, problemBox } from './ui.js';

/**
 * Fills `view` with the screen's header (title, optional breadcrumb and extra header parts such as
 * a live indicator) and answers the element the screen writes into. The router lets only admins in.
 */
export function opsFrame(view, title, { crumbs = [], extra = [] } = {}) {
  view.replaceChildren();
  if (crumbs.length) {
    view.append(h('nav', { class: 'breadcrumb', 'aria-label': 'Breadcrumb' },
      ...crumbs.flatMap(([href, label], i) => [i ? ' / ' : '', h('a', { href }, label)])));
  }
  view.append(pageHeader(title, ...extra));
  const body = h('div', { class: 'ops-body' });
  view.append(body);
  return body;
}

/** Any thrown value as a Problem. */
export function asProblem(err) {
  return err instanceof Problem ? err : Problem.from(err);
}

/** Shows `err` as a problem box appended to `where`; answers the box. */
export function problemIn(where, err) {
  const box = problemBox(asProblem(err));
  where.append(box);
  return box;
}

/**
 * Follows the admin feed (`/v1/live`) until `signal` aborts, calling `onChange(events)` (debounced,
 * with the events seen) whenever it brings events `wanted(event)` accepts. `indicator` (from
 * ui.js `liveIndicator`) shows the connection's state.
 */
export function onFeed(wanted, onChange, { signal, indicator, debounceMs = 250 } = {}) {
  let timer = null;
  let batch = [];
  live('/v1/live', (message) => {
    const event = message.data;
    if (!event || typeof event !== 'object' || !wanted(event)) return;
    batch.push(event);
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      const seen = batch;
      batch = [];
      if (!(signal && signal.aborted)) onChange(seen);
    }, debounceMs);
  }, { signal, onStatus: indicator ? indicator.set : undefined });
  if (signal) signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
}

/**
 * Calls `tick` now and again `ms` after each call ends, until `signal` aborts; `ms` may be a
 * function, asked after each tick (a screen reads faster while something it watches moves).
 */
export function every(ms, tick, signal) {
  let timer = null;
  const run = async () => {
    if (signal.aborted) return;
    try {
      await tick();
    } finally {
      if (!signal.aborted) timer = setTimeout(run, typeof ms === 'function' ? ms() : ms);
    }
  };
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  run();
}

/** Milliseconds as a short duration: `850 ms`, `4.2 s`, `3 min 5 s`, `2 h 4 min`. */
export function duration(ms) {
  if (ms == null || Number.isNaN(ms)) return '—';
  const sign = ms < 0 ? '−' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${Math.round(rest)} ms`;
  if (rest < 60_000) return `${sign}${(rest / 1000).toFixed(rest < 10_000 ? 1 : 0)} s`;
  rest = Math.round(rest / 1000);
  if (rest < 3600) return `${sign}${Math.floor(rest / 60)} min ${rest % 60} s`;
  rest = Math.round(rest / 60);
  if (rest < 1440) return `${sign}${Math.floor(rest / 60)} h ${rest % 60} min`;
  return `${sign}${Math.floor(rest / 1440)} d ${Math.floor((rest % 1440) / 60)} h`;
}

/** A whole number with thousands separators. */
export function count(n) {
  return typeof n === 'number' ? n.toLocaleString('en') : '—';
}

/** Milliseconds between two RFC 3339 times. */
export function between(from, to) {
  return Date.parse(to) - Date.parse(from);
}

/** A `<time>` element showing `iso` to the second (UTC), with the full value as its title. */
export function when(iso) {
  if (!iso) return h('span', { class: 'ops-none' }, '—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', {}, String(iso));
  const text = date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, ' UTC');
  return h('time', { datetime: iso, title: iso }, text);
}

/** JSON shown as indented text in a `<pre>`. */
export function jsonBlock(value, label) {
  const attrs = { class: 'ops-json', tabindex: '0' };
  if (label) attrs['aria-label'] = label;
  return h('pre', attrs, JSON.stringify(value, null, 2));
}

/** A `<details>` that shows `value` as JSON when opened. */
export function jsonDetails(summary, value) {
  return h('details', { class: 'ops-details' }, h('summary', {}, summary), jsonBlock(value));
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes (SVG needs its namespace, which `h` does not give). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

/**
 * A small trend line of `values` (oldest first), `width`×`height` pixels, labelled for screen
 * readers with `label`; the last value is marked with a dot.
 */
export function sparkline(values, label, { width = 120, height = 28 } = {}) {
  const image = svg('svg', { class: 'ops-spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label });
  image.append(svg('title', {}, document.createTextNode(label)));
  if (values.length === 0) return image;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? (width - 4) / (values.length - 1) : 0;
  const y = (v) => (height - 3 - (v / max) * (height - 6)).toFixed(1);
  const points = values.map((v, i) => `${(2 + i * step).toFixed(1)},${y(v)}`).join(' ');
  image.append(svg('line', { class: 'ops-spark-base', x1: 2, x2: width - 2, y1: height - 3, y2: height - 3 }));
  image.append(svg('polyline', { class: 'ops-spark-line', points, fill: 'none' }));
  const last = values.length - 1;
  image.append(svg('circle', { class: 'ops-spark-dot', cx: (2 + last * step).toFixed(1), cy: y(values[last]), r: 2.5 }));
  return image;
}

/** A region for the results of an operator's actions, read out by screen readers as they come. */
export function statusRegion() {
  return h('div', { class: 'ops-outcome', role: 'status', 'aria-live': 'polite' });
}

/** Writes a message into a status region: `kind` is `ok`, `warn` or `error`. */
export function say(region, kind, ...parts) {
  region.replaceChildren(h('p', { class: `ops-say ops-say-${kind}` }, ...parts));
}

/** The JSON of `path`, or the problem it answered (never throws). */
export async function tryJson(path, options = {}) {
  try {
    return { ok: true, value: await getJson(path, options) };
  } catch (err) {
    return { ok: false, problem: asProblem(err) };
  }
}

/** A link to one stream's screen. */
export function streamLink(type, id, text) {
  return h('a', { href: `#/ops/events/${encodeURIComponent(type)}/${encodeURIComponent(id)}` }, text || `${type} ${id}`);
}
