// `#/` — the one screen: every room of roomview, searchable and filterable, live. Public: it
// shows what `GET /v1/rooms` shows to anyone and nothing personal. A room that changes is read
// again (at the position the live stream names) and updated in place, briefly highlighted.

import { getAll, getJson, live, withQuery, Problem } from './api.js';
import { h, replace, pageHeader, loading, empty, problemBox, money, date, agoEl, refreshTimes, statusBadge, liveIndicator, flash } from './ui.js';

/** Nights shown by the occupancy strip. */
export const NIGHTS = 60;
const DAY_MS = 86400000;

/** Today's date in UTC as `YYYY-MM-DD` (roomview's "today" is UTC too). */
function todayUtc() {
  return new Date().toISOString().slice(0, 10);
}

function addDays(ymd, days) {
  return new Date(Date.parse(`${ymd}T00:00:00Z`) + days * DAY_MS).toISOString().slice(0, 10);
}

/** For each of the next `nights` nights from today, whether a booked stay covers it. */
export function occupancy(booked, nights = NIGHTS, today = todayUtc()) {
  const days = Array.from({ length: nights }, (_, i) => ({ date: addDays(today, i), booked: null }));
  for (const stay of booked || []) {
    for (const day of days) {
      if (stay.check_in <= day.date && day.date < stay.check_out) day.booked = stay;
    }
  }
  return days;
}

/** The strip of the next nights: booked nights filled, with a count. `large` for the room page. */
export function occupancyStrip(booked, { large = false, compact = false } = {}) {
  const days = occupancy(booked);
  const count = days.filter((d) => d.booked).length;
  const pct = Math.round((count / days.length) * 100);
  const strip = h(
    'div',
    { class: 'strip', role: 'img', 'aria-label': `Next ${NIGHTS} nights: ${count} booked, ${days.length - count} free`, dataset: { bookedNights: String(count) } },
    days.map((d) => {
      const weekday = new Date(`${d.date}T00:00:00Z`).getUTCDay();
      return h('span', {
        class: ['night', d.booked && 'booked', (weekday === 5 || weekday === 6) && 'weekend'],
        title: d.booked ? `${date(d.date)}: booked (${date(d.booked.check_in)} → ${date(d.booked.check_out)})` : `${date(d.date)}: free`,
      });
    }),
  );
  if (compact) {
    return h('div', { class: 'occupancy compact' }, strip, h('div', { class: 'legend' }, h('span', { class: 'occ-count' }, h('strong', null, String(count)), ` of ${NIGHTS} booked · ${pct}%`)));
  }
  return h(
    'div',
    { class: ['occupancy', large && 'large'] },
    h('div', { class: 'legend' }, h('span', null, `Next ${NIGHTS} nights`), h('span', { class: 'occ-count' }, h('strong', null, String(count)), ` booked · ${pct}%`)),
    strip,
    h('div', { class: 'legend' }, h('span', null, date(days[0].date)), h('span', null, date(days[days.length - 1].date))),
  );
}

const STATUSES = ['pending', 'confirmed', 'cancelled', 'rejected'];

/** Reservation counts by status, as four small tiles. */
export function countTiles(counts) {
  return h(
    'ul',
    { class: 'counts', 'aria-label': 'Reservations by status' },
    STATUSES.map((s) => {
      const n = Number((counts || {})[s] || 0);
      return h('li', { class: [s, n > 0 && 'nonzero'], dataset: { count: s } }, h('span', { class: 'n' }, String(n)), h('span', { class: 'w' }, s));
    }),
  );
}

/** "★ 4.5 · 3 reviews", or "No reviews". */
export function ratingText(reviews) {
  const count = (reviews && reviews.count) || 0;
  if (!count) return h('span', { class: 'muted' }, 'No reviews yet');
  const avg = reviews.average_rating;
  return h(
    'span',
    { class: 'rating' },
    h('span', { class: 'stars', 'aria-hidden': 'true' }, '★'),
    ' ',
    h('strong', null, avg === null || avg === undefined ? '—' : avg.toFixed(1)),
    ` · ${count} review${count === 1 ? '' : 's'}`,
  );
}

/** The card of one room (the same element can be refilled in place by `fillCard`). */
export function roomCard(room, { headingLevel = 'h2' } = {}) {
  const card = h('article', { class: 'room-card' });
  fillCard(card, room, headingLevel);
  return card;
}

function fillCard(card, room, headingLevel = 'h2') {
  const headingId = `room-${room.room_id}`;
  card.className = ['room-card', !room.listed && 'delisted'].filter(Boolean).join(' ');
  card.dataset.roomId = room.room_id;
  card.dataset.position = room.position;
  card.setAttribute('aria-labelledby', headingId);
  replace(
    card,
    h(
      'div',
      { class: 'room-top' },
      h(headingLevel, { id: headingId }, h('a', { href: `#/rooms/${encodeURIComponent(room.room_id)}` }, room.name)),
      room.listed ? null : h('span', { class: 'badge tone-muted', dataset: { status: 'delisted' }, title: 'Not listed: no new reservations' }, 'not listed'),
    ),
    h('p', { class: 'address' }, room.address),
    h(
      'div',
      { class: 'price-line' },
      h('span', null, h('span', { class: 'price' }, money(room.nightly_price)), ' / night'),
      h('span', null, `up to ${room.capacity} guest${room.capacity === 1 ? '' : 's'}`),
      h('span', { class: 'host', title: `Host ${room.host_id}` }, 'host ', h('code', null, room.host_id)),
    ),
    occupancyStrip(room.booked),
    countTiles(room.reservations),
    h(
      'div',
      { class: 'money-line' },
      h('span', null, h('span', { class: 'w' }, 'Charged'), h('strong', { dataset: { money: 'charged' } }, money(room.payments && room.payments.charged))),
      h('span', null, h('span', { class: 'w' }, 'Refunded'), h('strong', { dataset: { money: 'refunded' } }, money(room.payments && room.payments.refunded))),
    ),
    h('div', { class: 'meta-line' }, ratingText(room.reviews), h('span', null, 'changed ', agoEl(room.updated_at))),
  );
}

/** A row of the table layout. */
function roomRow(room) {
  const c = room.reservations || {};
  return h(
    'tr',
    { class: ['room-row', !room.listed && 'delisted'], dataset: { roomId: room.room_id, position: room.position } },
    h('td', { class: 'name' }, h('a', { href: `#/rooms/${encodeURIComponent(room.room_id)}` }, room.name), h('div', { class: 'muted' }, room.address)),
    h('td', { class: 'nowrap' }, h('code', null, room.host_id)),
    h('td', { class: 'num nowrap' }, money(room.nightly_price)),
    h('td', { class: 'num' }, String(room.capacity)),
    h('td', null, statusBadge(room.listed ? 'listed' : 'delisted')),
    h('td', null, occupancyStrip(room.booked, { compact: true })),
    STATUSES.map((s) => h('td', { class: 'num', dataset: { count: s } }, String(c[s] || 0))),
    h('td', { class: 'num nowrap' }, money(room.payments && room.payments.charged)),
    h('td', { class: 'num nowrap' }, money(room.payments && room.payments.refunded)),
    h('td', { class: 'nowrap' }, ratingText(room.reviews)),
    h('td', { class: 'nowrap' }, agoEl(room.updated_at)),
  );
}

/** Compare two feed positions (`"123"` or `"123-4"`); null when either cannot be read. */
export function comparePositions(a, b) {
  const parse = (p) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(String(p || ''));
    return m ? [BigInt(m[1]), BigInt(m[2] || '0')] : null;
  };
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return null;
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  if (x[1] !== y[1]) return x[1] < y[1] ? -1 : 1;
  return 0;
}

/** Sums of money by currency, written "€1,200.00 + $300.00". */
function moneySum(list) {
  const by = new Map();
  for (const m of list) {
    if (!m || !m.currency) continue;
    by.set(m.currency, (by.get(m.currency) || 0) + m.amount_minor);
  }
  if (by.size === 0) return money(null);
  return [...by.entries()].map(([currency, amount_minor]) => money({ amount_minor, currency })).join(' + ');
}

const SORTS = {
  name: { label: 'Name', cmp: (a, b) => a.name.localeCompare(b.name) || a.room_id.localeCompare(b.room_id) },
  changed: { label: 'Recently changed', cmp: (a, b) => (b.updated_at || '').localeCompare(a.updated_at || '') || a.name.localeCompare(b.name) },
  occupancy: { label: 'Most booked', cmp: (a, b) => bookedNights(b) - bookedNights(a) || a.name.localeCompare(b.name) },
  price: { label: 'Price', cmp: (a, b) => (a.nightly_price.amount_minor - b.nightly_price.amount_minor) || a.name.localeCompare(b.name) },
  pending: { label: 'Most pending', cmp: (a, b) => (b.reservations.pending - a.reservations.pending) || a.name.localeCompare(b.name) },
};

const nightsCache = new WeakMap();
function bookedNights(room) {
  if (!nightsCache.has(room)) nightsCache.set(room, occupancy(room.booked).filter((d) => d.booked).length);
  return nightsCache.get(room);
}

export async function render(view, params, ctx) {
  const query = params.query || new URLSearchParams();
  const state = {
    q: query.get('q') || '',
    listed: ['listed', 'delisted'].includes(query.get('listed')) ? query.get('listed') : 'all',
    host: query.get('host') || '',
    sort: SORTS[query.get('sort')] ? query.get('sort') : 'name',
    layout: query.get('layout') === 'table' ? 'table' : 'cards',
  };
  const rooms = new Map();
  const indicator = liveIndicator();

  // ---- the frame ----
  const search = h('input', { id: 'room-search', type: 'search', placeholder: 'Name, address, host or id', value: state.q, autocomplete: 'off' });
  const listedSelect = h(
    'select',
    { id: 'room-listed' },
    h('option', { value: 'all' }, 'All rooms'),
    h('option', { value: 'listed' }, 'Listed'),
    h('option', { value: 'delisted' }, 'Not listed'),
  );
  listedSelect.value = state.listed;
  const hostSelect = h('select', { id: 'room-host' }, h('option', { value: '' }, 'All hosts'));
  const sortSelect = h('select', { id: 'room-sort' }, Object.entries(SORTS).map(([key, s]) => h('option', { value: key }, s.label)));
  sortSelect.value = state.sort;
  const layoutButtons = ['cards', 'table'].map((key) =>
    h('button', { type: 'button', 'aria-pressed': String(state.layout === key), dataset: { layout: key }, onclick: () => setLayout(key) }, key === 'cards' ? 'Cards' : 'Table'),
  );
  const resultCount = h('p', { class: 'result-count', role: 'status', 'aria-live': 'polite' });
  const summary = h('section', { class: 'summary', 'aria-label': 'Totals of the rooms shown' });
  const list = h('div', { class: 'room-list' }, loading('Loading rooms…'));

  replace(
    view,
    pageHeader('Rooms', indicator, h('p', { class: 'subtitle' }, 'Every room in Stay with its bookings, payments and reviews — updated live as they change.')),
    summary,
    h(
      'form',
      { class: 'toolbar', role: 'search', 'aria-label': 'Find rooms', onsubmit: (e) => e.preventDefault() },
      h('div', { class: 'field grow' }, h('label', { for: 'room-search' }, 'Search'), search),
      h('div', { class: 'field' }, h('label', { for: 'room-listed' }, 'Listing'), listedSelect),
      h('div', { class: 'field' }, h('label', { for: 'room-host' }, 'Host'), hostSelect),
      h('div', { class: 'field' }, h('label', { for: 'room-sort' }, 'Sort by'), sortSelect),
      h('div', { class: 'field' }, h('span', { class: 'label', id: 'layout-label' }, 'Show as'), h('div', { class: 'segmented', role: 'group', 'aria-labelledby': 'layout-label' }, layoutButtons)),
      resultCount,
    ),
    list,
  );

  // ---- state in the address bar (so a filtered view can be bookmarked) ----
  function remember() {
    const q = new URLSearchParams();
    if (state.q) q.set('q', state.q);
    if (state.listed !== 'all') q.set('listed', state.listed);
    if (state.host) q.set('host', state.host);
    if (state.sort !== 'name') q.set('sort', state.sort);
    if (state.layout !== 'cards') q.set('layout', state.layout);
    const text = q.toString();
    history.replaceState(null, '', text ? `#/?${text}` : '#/');
  }

  search.addEventListener('input', () => { state.q = search.value.trim(); remember(); draw(); });
  listedSelect.addEventListener('change', () => { state.listed = listedSelect.value; remember(); draw(); });
  hostSelect.addEventListener('change', () => { state.host = hostSelect.value; remember(); draw(); });
  sortSelect.addEventListener('change', () => { state.sort = sortSelect.value; remember(); draw(); });

  function setLayout(key) {
    state.layout = key;
    for (const b of layoutButtons) b.setAttribute('aria-pressed', String(b.dataset.layout === key));
    remember();
    drawn = null;
    draw();
  }

  function visible() {
    const needle = state.q.toLowerCase();
    return [...rooms.values()]
      .filter((r) => state.listed === 'all' || (state.listed === 'listed') === r.listed)
      .filter((r) => !state.host || r.host_id === state.host)
      .filter((r) => !needle || [r.name, r.address, r.host_id, r.room_id].some((t) => String(t).toLowerCase().includes(needle)))
      .sort(SORTS[state.sort].cmp);
  }

  function drawHosts() {
    const hosts = [...new Set([...rooms.values()].map((r) => r.host_id))].sort();
    const have = [...hostSelect.options].slice(1).map((o) => o.value);
    if (hosts.length === have.length && hosts.every((x, i) => x === have[i])) return;
    replace(hostSelect, h('option', { value: '' }, 'All hosts'), hosts.map((x) => h('option', { value: x }, x)));
    if (state.host && !hosts.includes(state.host)) hostSelect.appendChild(h('option', { value: state.host }, state.host));
    hostSelect.value = state.host;
  }

  function drawSummary(shown) {
    const listedCount = shown.filter((r) => r.listed).length;
    const sum = (k) => shown.reduce((n, r) => n + Number((r.reservations || {})[k] || 0), 0);
    const nights = shown.filter((r) => r.listed).reduce((n, r) => n + bookedNights(r), 0);
    const capacityNights = listedCount * NIGHTS;
    const reviewed = shown.filter((r) => r.reviews && r.reviews.count > 0);
    const reviewCount = reviewed.reduce((n, r) => n + r.reviews.count, 0);
    const ratingSum = reviewed.reduce((n, r) => n + r.reviews.count * (r.reviews.average_rating || 0), 0);
    const tile = (label, value, note, key) =>
      h('div', { class: 'stat', dataset: { stat: key } }, h('div', { class: 'stat-label' }, label), h('div', { class: ['stat-value', String(value).length > 12 && 'long'] }, value), note && h('div', { class: 'stat-note' }, note));
    replace(
      summary,
      tile('Rooms', String(shown.length), `${listedCount} listed`, 'rooms'),
      tile('Confirmed', String(sum('confirmed')), `${sum('pending')} pending · ${sum('cancelled')} cancelled · ${sum('rejected')} rejected`, 'reservations'),
      tile('Occupancy', capacityNights ? `${Math.round((nights / capacityNights) * 100)}%` : '—', `${nights} of ${capacityNights} listed nights, next ${NIGHTS}`, 'occupancy'),
      tile('Charged', moneySum(shown.map((r) => r.payments && r.payments.charged)), `refunded ${moneySum(shown.map((r) => r.payments && r.payments.refunded))}`, 'payments'),
      tile('Reviews', String(reviewCount), reviewCount ? `average ★ ${(ratingSum / reviewCount).toFixed(1)}` : 'none yet', 'reviews'),
    );
  }

  // The elements on screen, by room id, for updates in place.
  let drawn = null; // {layout, container, byId: Map}

  function draw() {
    const shown = visible();
    drawHosts();
    drawSummary(shown);
    resultCount.textContent = shown.length === rooms.size ? `${rooms.size} room${rooms.size === 1 ? '' : 's'}` : `${shown.length} of ${rooms.size} rooms`;
    if (rooms.size === 0) {
      drawn = null;
      replace(list, empty('No rooms yet. A host registers one with POST /v1/rooms, or try `stay seed`.'));
      return;
    }
    if (shown.length === 0) {
      drawn = null;
      replace(list, empty('No room matches these filters.'));
      return;
    }
    if (!drawn || drawn.layout !== state.layout) {
      const container =
        state.layout === 'table'
          ? h('tbody')
          : h('ul', { class: 'room-grid', 'aria-label': 'Rooms' });
      drawn = { layout: state.layout, container, byId: new Map() };
      replace(
        list,
        state.layout === 'table'
          ? h(
              'div',
              { class: 'table-wrap' },
              h(
                'table',
                { class: 'room-table' },
                h('caption', { class: 'visually-hidden' }, 'Rooms with their reservations, payments and reviews'),
                h('thead', null, h('tr', null, ['Room', 'Host', 'Price / night', 'Guests', 'Listing', `Next ${NIGHTS} nights`, 'Pending', 'Confirmed', 'Cancelled', 'Rejected', 'Charged', 'Refunded', 'Reviews', 'Changed'].map((t, i) => h('th', { scope: 'col', class: (i === 2 || i === 3 || (i >= 6 && i <= 11)) ? 'num' : null }, t)))),
                container,
              ),
            )
          : container,
      );
    }
    const wanted = new Set(shown.map((r) => r.room_id));
    for (const [id, el] of drawn.byId) {
      if (!wanted.has(id)) {
        el.remove();
        drawn.byId.delete(id);
      }
    }
    const order = shown.map((room) => {
      let el = drawn.byId.get(room.room_id);
      if (!el) {
        el = state.layout === 'table' ? roomRow(room) : h('li', null, roomCard(room));
        drawn.byId.set(room.room_id, el);
      }
      return el;
    });
    // Move elements only when the order changed (most updates change a card, not the order).
    const children = drawn.container.children;
    if (children.length !== order.length || order.some((el, i) => children[i] !== el)) {
      drawn.container.append(...order);
    }
  }

  /** Draw once after a burst of updates rather than once per update. */
  let drawTimer = null;
  function drawSoon() {
    if (drawTimer !== null) return;
    drawTimer = setTimeout(() => {
      drawTimer = null;
      draw();
    }, 30);
  }

  /** Put a changed room on screen in place, highlighted. */
  function update(room) {
    const old = rooms.get(room.room_id);
    if (old && comparePositions(room.position, old.position) === -1) return; // an older answer
    rooms.set(room.room_id, room);
    const el = drawn && drawn.byId.get(room.room_id);
    if (el) {
      const hadFocus = el.contains(document.activeElement);
      if (drawn.layout === 'table') {
        const row = roomRow(room);
        el.replaceWith(row);
        drawn.byId.set(room.room_id, row);
        flash(row);
      } else {
        const card = el.querySelector('.room-card');
        fillCard(card, room);
        flash(card);
        if (hadFocus) card.querySelector('a').focus();
      }
    }
    if (el) drawSoon();
    else {
      // A room new to the screen: draw now, so it can be highlighted.
      draw();
      const added = drawn && drawn.byId.get(room.room_id);
      if (added) flash(added.querySelector('.room-card') || added);
    }
  }

  // ---- loading and live updates ----
  const signal = ctx.signal;
  let loaded = false;
  const dirty = new Map(); // room id → highest position named by the stream
  let flushing = false;

  async function loadAll() {
    const items = await getAll('/v1/rooms', { max: 5000, limit: 500, signal });
    if (signal.aborted) return;
    for (const room of items) {
      const old = rooms.get(room.room_id);
      if (old && comparePositions(room.position, old.position) === -1) continue;
      const changed = loaded && old && old.position !== room.position;
      rooms.set(room.room_id, room);
      if (changed) queueMicrotask(() => flash(drawn && drawn.byId.get(room.room_id)));
    }
    loaded = true;
    draw();
  }

  async function flush() {
    if (flushing || !loaded || signal.aborted) return;
    flushing = true;
    try {
      while (dirty.size > 0 && !signal.aborted) {
        const batch = [...dirty.entries()].slice(0, 8);
        for (const [id] of batch) dirty.delete(id);
        await Promise.all(
          batch.map(async ([id, position]) => {
            try {
              const room = await getJson(withQuery(`/v1/rooms/${encodeURIComponent(id)}`, { min_position: position, wait_ms: 10000 }), { signal });
              if (!signal.aborted) update(room);
            } catch (err) {
              if (signal.aborted) return;
              const p = Problem.from(err);
              // The model was slow, or the server hiccupped: ask again shortly.
              if (p.status === 504 || p.status === 503 || p.code === 'network_error') {
                setTimeout(() => { if (!dirty.has(id)) dirty.set(id, position); flush(); }, 1000);
              } else {
                console.warn(`room ${id} could not be read after a change`, p);
              }
            }
          }),
        );
      }
    } finally {
      flushing = false;
    }
  }

  let opened = false;
  live(
    '/v1/live/rooms',
    ({ data }) => {
      if (!data || !data.room_id) return;
      const known = rooms.get(data.room_id);
      if (known && comparePositions(data.position, known.position) !== 1) return; // already shown
      const was = dirty.get(data.room_id);
      if (!was || comparePositions(data.position, was) === 1) dirty.set(data.room_id, data.position);
      flush();
    },
    {
      signal,
      onStatus: (s, problem) => {
        indicator.set(s, problem);
        if (s === 'open' && !opened) {
          opened = true;
          // Changes committed just before the stream opened may not have reached roomview when
          // the list is read; a second read a little later picks them up.
          setTimeout(() => { if (!signal.aborted) loadAll().catch(() => {}); }, 3000);
        }
      },
    },
  );

  try {
    await loadAll();
  } catch (err) {
    if (signal.aborted) return undefined;
    replace(list, problemBox(Problem.from(err)));
  }
  flush();

  const ticker = setInterval(() => refreshTimes(view), 15000);
  return () => {
    clearInterval(ticker);
    clearTimeout(drawTimer);
  };
}
