// Operators: everything one correlation (a reservation) caused across aggregates
// (`#/ops/correlations/:id`), as a tree by causation: each event under the event whose command
// wrote it; a root was caused by a request. From `GET /v1/admin/correlations/{id}`.

import { getJson } from './api.js';
import { h, problemBox } from './ui.js';
import { asProblem, duration, opsFrame, streamLink, when } from './ops-common.js';

/** The events as a forest: `[{event, children}]` by `parent`, each level in feed order. */
export function causationTree(events) {
  const nodes = new Map(events.map((event) => [event.id, { event, children: [] }]));
  const roots = [];
  for (const event of events) {
    const node = nodes.get(event.id);
    const parent = event.parent && nodes.get(event.parent);
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  return roots;
}

/** The screen of one correlation. */
export async function renderCorrelation(view, params, ctx) {
  const id = params.id;
  const body = opsFrame(view, 'Causation tree', {
    crumbs: [['#/ops/events', 'Events']],
    extra: [h('p', { class: 'subtitle' }, 'Everything correlation ', h('code', {}, id), ' caused, each event under the event that caused it.')],
  });
  let answer;
  try {
    answer = await getJson(`/v1/admin/correlations/${encodeURIComponent(id)}`, { signal: ctx.signal });
  } catch (err) {
    body.append(problemBox(asProblem(err)));
    return;
  }
  const events = answer.events;
  const start = events.length ? events[0].recorded_at : null;
  const end = events.length ? events[events.length - 1].recorded_at : null;

  const aggregates = h('div', { class: 'table-wrap' },
    h('table', { class: 'ops-table ops-aggregates' },
      h('caption', {}, `${events.length} event${events.length === 1 ? '' : 's'} in ${answer.aggregates.length} stream${answer.aggregates.length === 1 ? '' : 's'}, over ${duration(Date.parse(end) - Date.parse(start))}`),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Stream'), h('th', { scope: 'col' }, 'Id'), h('th', { scope: 'col', class: 'num' }, 'Events'))),
      h('tbody', {}, ...answer.aggregates.map((a) => h('tr', {},
        h('td', {}, h('span', { class: `ops-agg ops-agg-${a.aggregate_type}` }, a.aggregate_type)),
        h('td', {}, streamLink(a.aggregate_type, a.aggregate_id, a.aggregate_id)),
        h('td', { class: 'num' }, String(a.events)))))));

  const saga = answer.aggregates.find((a) => a.aggregate_type === 'ReservationSaga');
  body.append(
    h('p', { class: 'ops-links' }, saga ? h('a', { href: `#/ops/sagas/${saga.aggregate_id}` }, 'Saga timeline') : ''),
    h('section', { 'aria-labelledby': 'ops-streams-title' }, h('h2', { id: 'ops-streams-title', class: 'visually-hidden' }, 'Streams'), aggregates),
    h('section', { class: 'panel', 'aria-labelledby': 'ops-tree-title' },
      h('h2', { id: 'ops-tree-title' }, 'By causation'),
      h('p', { class: 'muted ops-note' }, 'Open or close a branch with Enter or Space on its event. Times are after the first event.'),
      h('ul', { class: 'ops-tree' }, ...causationTree(events).map((node) => treeNode(node, start)))));
}

/** One event of the tree with the events it caused beneath it. */
function treeNode(node, start) {
  const e = node.event;
  const line = [
    h('span', { class: `ops-agg ops-agg-${e.aggregate_type}` }, e.aggregate_type),
    ' ',
    h('span', { class: 'ops-ev-type' }, e.event_type),
    ' ',
    streamLink(e.aggregate_type, e.aggregate_id, `#${e.sequence}`),
    h('span', { class: 'ops-offset' }, ` +${duration(Date.parse(e.recorded_at) - Date.parse(start))}`),
    h('span', { class: 'ops-pos' }, ` @${e.position}`),
    e.actor ? h('span', { class: 'ops-actor' }, ` by ${e.actor}`) : '',
    e.command_id ? h('span', { class: 'ops-pos', title: 'command id' }, ` ${e.command_id}`) : '',
    !e.parent && e.causation_id ? h('span', { class: 'muted ops-cause' }, ` — caused by ${e.causation_id.includes('@') ? 'event' : 'request'} ${e.causation_id}`) : '',
  ];
  const attrs = { dataset: { event: e.id }, title: when(e.recorded_at).textContent };
  if (node.children.length === 0) return h('li', attrs, h('div', { class: 'ops-tree-leaf' }, ...line));
  return h('li', attrs,
    h('details', { open: true },
      h('summary', {}, ...line, h('span', { class: 'muted' }, ` (${node.children.length} caused)`)),
      h('ul', {}, ...node.children.map((child) => treeNode(child, start)))));
}
