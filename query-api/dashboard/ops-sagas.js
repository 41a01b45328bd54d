// Operators: the saga list (`#/ops/sagas?status=…`) from the `sagas` read model, filtered by
// status, paged by cursor and refreshed live from the admin feed. One saga's timeline
// (`#/ops/sagas/:id`) is `renderSaga`, in ops-saga-timeline.js.

import { getJson } from './api.js';
import { h, liveIndicator, statusBadge } from './ui.js';
import { onFeed, opsFrame, problemIn, when } from './ops-common.js';

export { renderSaga } from './ops-saga-timeline.js';

/** The statuses a saga can have, as the list's filter offers them. */
export const SAGA_STATUSES = ['running', 'parked', 'completed', 'compensated'];

const PAGE = 50;

/** The list's hash for these statuses and cursor. */
function listHash(statuses, cursor) {
  const query = new URLSearchParams();
  if (statuses.length) query.set('status', statuses.join(','));
  if (cursor) query.set('cursor', cursor);
  const text = query.toString().replaceAll('%2C', ',');
  return text ? `#/ops/sagas?${text}` : '#/ops/sagas';
}

/** The saga list: `#/ops/sagas?status=a,b&cursor=…`. */
export function render(view, params, ctx) {
  const indicator = liveIndicator();
  const body = opsFrame(view, 'Sagas', { extra: [indicator] });
  let statuses = (params.query.get('status') || '').split(',').filter((s) => SAGA_STATUSES.includes(s));
  let cursor = params.query.get('cursor') || '';
  // The cursors of the pages before this one, for "Previous page".
  const behind = [];

  const boxes = SAGA_STATUSES.map((status) => {
    const box = h('input', { type: 'checkbox', name: 'status', value: status, checked: statuses.includes(status) });
    return h('label', { class: 'ops-check' }, box, statusBadge(status));
  });
  const filter = h('form', { class: 'ops-filter toolbar', 'aria-label': 'Filter sagas' },
    h('fieldset', {}, h('legend', {}, 'Only sagas that are (none ticked: all)'), ...boxes));
  filter.addEventListener('submit', (event) => event.preventDefault());
  filter.addEventListener('change', () => {
    statuses = [...filter.querySelectorAll('input[name=status]:checked')].map((input) => input.value);
    cursor = '';
    behind.length = 0;
    // The address follows the filter without a re-render, so focus stays on the box just ticked.
    history.replaceState(null, '', listHash(statuses, cursor));
    load();
  });

  const note = h('p', { class: 'muted ops-note' },
    'Ordered by saga id (the reservation\'s id), which keeps each saga in its place while it changes, so pages neither ',
    'repeat nor skip; it is time order only for reservations made without an Idempotency-Key. Rows change live.');
  const table = h('div', { class: 'ops-sagas-table' });
  const pager = h('nav', { class: 'ops-pager', 'aria-label': 'Pages of sagas' });
  body.append(filter, note, table, pager);

  let shown = new Map();
  // Reads may overlap (the feed and the filter both ask); only the latest one is shown.
  let reads = 0;
  const load = async (minPosition) => {
    reads += 1;
    const mine = reads;
    const query = new URLSearchParams();
    if (statuses.length) query.set('status', statuses.join(','));
    if (cursor) query.set('cursor', cursor);
    query.set('limit', String(PAGE));
    if (minPosition) {
      query.set('min_position', minPosition);
      query.set('wait_ms', '3000');
    }
    let page;
    try {
      page = await getJson(`/v1/admin/sagas?${query}`, { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted || mine !== reads) return;
      // A live refresh that outran the read model reads what the model has now; the next event catches up.
      if (minPosition && err.code === 'projection_behind') return load();
      table.replaceChildren();
      problemIn(table, err);
      return;
    }
    if (mine !== reads) return;
    const before = shown;
    shown = new Map(page.items.map((s) => [s.saga_id, s.position]));
    table.replaceChildren(sagaTable(page.items, statuses, minPosition ? before : new Map()));
    pager.replaceChildren(...pagerButtons(page.next_cursor));
  };

  const go = (next) => {
    cursor = next;
    history.replaceState(null, '', listHash(statuses, cursor));
    load();
  };
  const pagerButtons = (next) => {
    const buttons = [];
    if (cursor) {
      buttons.push(h('button', { type: 'button', class: 'button', onclick: () => go(behind.pop() || '') }, 'Previous page'));
    }
    if (next) {
      buttons.push(h('button', { type: 'button', class: 'button', onclick: () => { behind.push(cursor); go(next); } }, 'Next page'));
    }
    return buttons;
  };

  // A saga event may change a row: read again once the model has applied it.
  onFeed((event) => event.aggregate_type === 'ReservationSaga', (events) => load(events[events.length - 1].position),
    { signal: ctx.signal, indicator });
  return load();
}

function sagaTable(items, statuses, before) {
  if (items.length === 0) {
    const which = statuses.length ? ` that are ${statuses.join(' or ')}` : '';
    return h('p', { class: 'empty' }, `No sagas${which}.`);
  }
  const rows = items.map((saga) => {
    const changed = before.size > 0 && before.get(saga.saga_id) !== saga.position;
    return h('tr', { class: changed ? 'flash' : null, dataset: { saga: saga.saga_id, status: saga.status } },
      h('th', { scope: 'row', 'data-label': 'Saga' }, h('a', { href: `#/ops/sagas/${saga.saga_id}`, class: 'mono' }, saga.saga_id)),
      h('td', { 'data-label': 'Status' }, statusBadge(saga.status)),
      h('td', { 'data-label': 'Step' }, saga.step),
      h('td', { 'data-label': 'Outcome' }, saga.outcome || '—'),
      h('td', { 'data-label': 'Last change' }, when(saga.updated_at)),
      h('td', { 'data-label': 'Position', class: 'num' }, saga.position));
  });
  const heads = ['Saga', 'Status', 'Step', 'Outcome', 'Last change', 'Position'];
  return h('div', { class: 'table-wrap ops-stack' },
    h('table', { class: 'ops-table' },
      h('caption', {}, `${items.length} saga${items.length === 1 ? '' : 's'} on this page`),
      h('thead', {}, h('tr', {}, ...heads.map((name) => h('th', { scope: 'col', class: name === 'Position' ? 'num' : null }, name)))),
      h('tbody', {}, ...rows)));
}
