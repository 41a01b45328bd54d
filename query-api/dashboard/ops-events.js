// Operators: the event log. The global feed (`#/ops/events?after=…`), paged forward by position
// or followed live, with a way into one stream or one correlation. One stream with its state as
// of any of its events is `renderStream` (ops-stream.js); what one correlation caused, as a tree
// by causation, is `renderCorrelation` (ops-correlation.js).

import { getJson } from './api.js';
import { h, liveIndicator, problemBox } from './ui.js';
import { asProblem, jsonBlock, onFeed, opsFrame, streamLink, when } from './ops-common.js';

export { renderStream } from './ops-stream.js';
export { renderCorrelation } from './ops-correlation.js';

/** The aggregate types the stream route knows. */
export const AGGREGATE_TYPES = ['Room', 'Reservation', 'Payment', 'Review', 'ReservationSaga'];

const LIMITS = [25, 50, 100, 250];
/** How many events the live tail keeps on screen. */
const TAIL = 200;

/** The feed's hash for a starting position and page size. */
function feedHash(after, limit, mode) {
  const query = new URLSearchParams();
  if (mode === 'live') query.set('mode', 'live');
  if (after) query.set('after', after);
  if (limit && limit !== 50) query.set('limit', String(limit));
  const text = query.toString();
  return text ? `#/ops/events?${text}` : '#/ops/events';
}

/** The feed screen. */
export function render(view, params, ctx) {
  const indicator = liveIndicator();
  const body = opsFrame(view, 'Events', {
    extra: [h('p', { class: 'subtitle' }, 'Every event in the log, in feed order. Open a stream to see its state as of any event, or a correlation to see what one reservation caused.')],
  });
  let mode = params.query.get('mode') === 'live' ? 'live' : 'pages';
  let after = params.query.get('after') || '';
  const asked = Number(params.query.get('limit'));
  let limit = LIMITS.includes(asked) ? asked : 50;
  const behind = [];

  body.append(openForms(ctx));

  const pagesButton = h('button', { type: 'button', 'aria-pressed': String(mode === 'pages') }, 'Pages');
  const liveButton = h('button', { type: 'button', 'aria-pressed': String(mode === 'live') }, 'Live tail');
  const limitSelect = h('select', { id: 'ops-feed-limit' }, ...LIMITS.map((n) => h('option', { value: String(n), selected: n === limit }, String(n))));
  const positionInput = h('input', { id: 'ops-feed-after', type: 'text', inputmode: 'numeric', placeholder: 'e.g. 120', value: after, pattern: '[0-9]+(-[0-9]+)?', size: '12' });
  const goForm = h('form', { class: 'ops-inline-form' },
    h('div', { class: 'field' }, h('label', { for: 'ops-feed-after' }, 'Events after position'), positionInput),
    h('button', { type: 'submit', class: 'button' }, 'Go'));
  const controls = h('div', { class: 'toolbar ops-feed-controls' },
    h('div', { class: 'segmented', role: 'group', 'aria-label': 'How to read the feed' }, pagesButton, liveButton),
    h('div', { class: 'field' }, h('label', { for: 'ops-feed-limit' }, 'Per page'), limitSelect),
    goForm,
    indicator);
  const where = h('p', { class: 'muted ops-feed-where', role: 'status' });
  const table = h('div', {});
  const pager = h('nav', { class: 'ops-pager', 'aria-label': 'Pages of the feed' });
  body.append(controls, where, table, pager);

  // The live tail's own stop, so switching back to pages ends it; leaving the screen ends it too.
  let tail = null;
  ctx.signal.addEventListener('abort', () => tail && tail.abort(), { once: true });
  const setMode = (next) => {
    mode = next;
    pagesButton.setAttribute('aria-pressed', String(mode === 'pages'));
    liveButton.setAttribute('aria-pressed', String(mode === 'live'));
    goForm.hidden = mode === 'live';
    limitSelect.disabled = mode === 'live';
    indicator.hidden = mode !== 'live';
    history.replaceState(null, '', feedHash(after, limit, mode));
    if (tail) tail.abort();
    tail = null;
    if (mode === 'live') startTail();
    else loadPage();
  };
  pagesButton.addEventListener('click', () => setMode('pages'));
  liveButton.addEventListener('click', () => setMode('live'));
  limitSelect.addEventListener('change', () => {
    limit = Number(limitSelect.value);
    history.replaceState(null, '', feedHash(after, limit, mode));
    loadPage();
  });
  goForm.addEventListener('submit', (event) => {
    event.preventDefault();
    behind.length = 0;
    go(positionInput.value.trim());
  });

  const go = (next) => {
    after = next;
    positionInput.value = after;
    history.replaceState(null, '', feedHash(after, limit, mode));
    loadPage();
  };

  let reads = 0;
  const loadPage = async () => {
    reads += 1;
    const mine = reads;
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set('after', after);
    let page;
    try {
      page = await getJson(`/v1/admin/feed?${query}`, { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted || mine !== reads) return;
      table.replaceChildren(problemBox(asProblem(err)));
      pager.replaceChildren();
      return;
    }
    if (mode !== 'pages' || mine !== reads) return;
    const items = page.items;
    const end = items.length < limit;
    const head = page.head ? ` The feed's head is at ${page.head}.` : '';
    where.textContent = items.length
      ? `Events ${items[0].position} to ${items[items.length - 1].position}${after ? ` (after ${after})` : ' (from the start)'}${end ? ': the end of the feed for now.' : '.'}${head}`
      : `No events after ${after || 'the start'} yet.${head}`;
    table.replaceChildren(items.length ? feedTable(items, 'oldest first') : h('p', { class: 'empty' }, 'Nothing here yet: new events show in the live tail.'));
    const buttons = [];
    if (after) buttons.push(h('button', { type: 'button', class: 'button', onclick: () => { behind.length = 0; go(''); } }, 'From the start'));
    if (behind.length) buttons.push(h('button', { type: 'button', class: 'button', onclick: () => go(behind.pop()) }, 'Previous page'));
    if (page.head && page.head !== (items.length ? items[items.length - 1].position : after)) {
      const [major] = String(page.head).split('-').map(Number);
      if (!String(page.head).includes('-') && Number.isFinite(major)) {
        buttons.push(h('button', { type: 'button', class: 'button', onclick: () => { behind.push(after); go(String(Math.max(0, major - limit))); } }, 'Latest page'));
      }
    }
    if (!end && page.next) buttons.push(h('button', { type: 'button', class: 'button primary', rel: 'next', onclick: () => { behind.push(after); go(page.next); } }, 'Next page'));
    pager.replaceChildren(...buttons);
  };

  const startTail = () => {
    tail = new AbortController();
    const { signal } = tail;
    const seen = [];
    where.textContent = 'Following new events as they are recorded, newest first.';
    table.replaceChildren(h('p', { class: 'empty' }, 'Waiting for the next event…'));
    pager.replaceChildren();
    onFeed(() => true, (events) => {
      seen.unshift(...events.reverse());
      seen.length = Math.min(seen.length, TAIL);
      where.textContent = `Following new events as they are recorded, newest first: ${seen.length} so far${seen.length === TAIL ? ' (the oldest drop off)' : ''}.`;
      table.replaceChildren(feedTable(seen, 'newest first'));
    }, { signal, indicator, debounceMs: 150 });
  };

  setMode(mode);
}

/** A form each to open a stream and a correlation. */
function openForms(ctx) {
  const type = h('select', { id: 'ops-open-type' }, ...AGGREGATE_TYPES.map((t) => h('option', { value: t }, t)));
  const id = h('input', { id: 'ops-open-id', type: 'text', required: true, placeholder: 'its id', autocomplete: 'off' });
  const stream = h('form', { class: 'ops-inline-form', 'aria-label': 'Open a stream' },
    h('div', { class: 'field' }, h('label', { for: 'ops-open-type' }, 'Stream'), type),
    h('div', { class: 'field grow' }, h('label', { for: 'ops-open-id' }, 'Id'), id),
    h('button', { type: 'submit', class: 'button' }, 'Open stream'));
  stream.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`#/ops/events/${encodeURIComponent(type.value)}/${encodeURIComponent(id.value.trim())}`);
  });
  const corr = h('input', { id: 'ops-open-correlation', type: 'text', required: true, placeholder: 'a reservation id', autocomplete: 'off' });
  const correlation = h('form', { class: 'ops-inline-form', 'aria-label': 'Open a correlation' },
    h('div', { class: 'field grow' }, h('label', { for: 'ops-open-correlation' }, 'Correlation'), corr),
    h('button', { type: 'submit', class: 'button' }, 'Open causation tree'));
  correlation.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`#/ops/correlations/${encodeURIComponent(corr.value.trim())}`);
  });
  return h('div', { class: 'toolbar ops-open' }, stream, correlation);
}

/** A correlation id worth linking: the correlations route takes UUIDs. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A table of feed events, each openable to its payload and metadata. */
export function feedTable(events, order) {
  const rows = events.map((event) => {
    const meta = event.metadata || {};
    const correlation = meta.correlation_id;
    return h('tr', { dataset: { position: event.position } },
      h('td', { 'data-label': 'Position', class: 'num mono' }, event.position),
      h('td', { 'data-label': 'Recorded' }, when(event.recorded_at)),
      h('td', { 'data-label': 'Stream' }, streamLink(event.aggregate_type, event.aggregate_id, event.aggregate_type), ' ',
        h('span', { class: 'mono ops-muted-id', title: event.aggregate_id }, shortened(event.aggregate_id)),
        h('span', { class: 'ops-pos' }, ` #${event.sequence}`)),
      h('td', { 'data-label': 'Event', class: 'ops-wide' },
        h('details', { class: 'ops-details' }, h('summary', {}, h('span', { class: 'ops-ev-type' }, event.event_type)),
          jsonBlock(event.payload, 'Payload'), jsonBlock(meta, 'Metadata'))),
      h('td', { 'data-label': 'Correlation' }, correlation && UUID.test(correlation)
        ? h('a', { href: `#/ops/correlations/${correlation}`, class: 'mono', title: correlation }, shortened(correlation))
        : h('span', { class: 'mono muted', title: correlation || '' }, correlation ? shortened(correlation) : '—')),
      h('td', { 'data-label': 'Actor' }, meta.actor || '—'));
  });
  return h('div', { class: 'table-wrap ops-stack' },
    h('table', { class: 'ops-table ops-feed' },
      h('caption', {}, `${events.length} event${events.length === 1 ? '' : 's'}, ${order}`),
      h('thead', {}, h('tr', {}, ...['Position', 'Recorded', 'Stream', 'Event', 'Correlation', 'Actor']
        .map((name) => h('th', { scope: 'col', class: name === 'Position' ? 'num' : null }, name)))),
      h('tbody', {}, ...rows)));
}

function shortened(id) {
  const text = String(id);
  return text.length > 13 ? `${text.slice(0, 8)}…` : text;
}
