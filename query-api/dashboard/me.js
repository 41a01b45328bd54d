// `#/me` — what belongs to the signed-in user, live. A guest: their reservations (status and
// payment) and their notifications. A host: their rooms and the reservations of those rooms.
// An admin: the way to the operator screens. `GET /v1/me/live` signals a change; the screen then
// reads the JSON routes again at the position it names, and highlights what changed.

import { getJson, getAll, postJson, live, withQuery, Problem } from './api.js';
import { h, replace, pageHeader, loading, empty, problemBox, money, date, agoEl, time, refreshTimes, statusBadge, liveIndicator, flash, shortId, confirmAction } from './ui.js';
import { roomCard, comparePositions } from './rooms.js';

const PAGE = 50;

function nights(r) {
  return Math.round((Date.parse(`${r.check_out}T00:00:00Z`) - Date.parse(`${r.check_in}T00:00:00Z`)) / 86400000);
}

const REASONS = {
  dates_unavailable: 'Those nights were taken',
  room_unavailable: 'The room is not available',
  too_many_guests: 'More guests than the room sleeps',
  stay_in_past: 'The stay starts in the past',
  payment_declined: 'The card was declined',
  payment_unavailable: 'The payment provider could not be reached in time',
};

function reasonText(reason) {
  if (!reason) return null;
  if (typeof reason === 'string') return reason;
  if (reason.code === 'other') return reason.detail || 'Other';
  return REASONS[reason.code] || String(reason.code || JSON.stringify(reason)).replace(/_/g, ' ');
}

/** Room names by id, read once each (public roomview). */
function roomNames(signal) {
  const names = new Map();
  const asked = new Map();
  return {
    known: names,
    async name(id) {
      if (names.has(id)) return names.get(id);
      if (!asked.has(id)) {
        asked.set(
          id,
          getJson(`/v1/rooms/${encodeURIComponent(id)}`, { signal }).then(
            (room) => { names.set(id, room.name); return room.name; },
            () => null,
          ),
        );
      }
      return asked.get(id);
    },
  };
}

/** Whether the guest may still cancel: pending or confirmed, and the stay has not begun (UTC). */
function cancellable(r) {
  return (r.status === 'pending' || r.status === 'confirmed') && r.check_in > new Date().toISOString().slice(0, 10);
}

/** The guest's Cancel button: asks first, then shows the answer (the card itself follows live). */
function cancelButton(r, roomName, signal) {
  const result = h('span', { class: 'res-action-result', role: 'status' });
  const button = h('button', { type: 'button', class: 'button small', dataset: { action: 'cancel' } }, 'Cancel stay');
  button.addEventListener('click', async () => {
    const ok = await confirmAction(`Cancel your stay${roomName ? ` at ${roomName}` : ''}?`, {
      confirmLabel: 'Cancel the stay',
      cancelLabel: 'Keep it',
      danger: true,
      detail: `${date(r.check_in)} → ${date(r.check_out)}. A charge already taken is refunded.`,
    });
    if (!ok) return;
    button.disabled = true;
    replace(result, 'Cancelling…');
    try {
      await postJson(`/v1/reservations/${encodeURIComponent(r.reservation_id)}/cancel`, undefined, { signal });
      replace(result, 'Cancellation requested.');
    } catch (err) {
      button.disabled = false;
      replace(result, problemBox(Problem.from(err)));
    }
  });
  return h('div', { class: 'res-actions' }, button, result);
}

/** A reservation as a card. `who` adds the guest (for hosts); `signal` adds the guest's actions. */
function reservationCard(r, roomName, { who = false, signal = null } = {}) {
  const pay = r.payment || {};
  return h(
    'li',
    { class: 'res-card', dataset: { reservationId: r.reservation_id, status: r.status, position: r.position } },
    h(
      'div',
      null,
      h('div', { class: 'res-room' }, h('a', { href: `#/rooms/${encodeURIComponent(r.room_id)}` }, roomName || 'Room '), roomName ? null : shortId(r.room_id)),
      h('div', { class: 'res-dates' }, `${date(r.check_in)} → ${date(r.check_out)} · ${nights(r)} night${nights(r) === 1 ? '' : 's'} · ${r.guests} guest${r.guests === 1 ? '' : 's'}`),
      r.reason ? h('div', { class: 'res-reason' }, h('span', { class: 'muted' }, 'Why: '), reasonText(r.reason)) : null,
    ),
    h('div', { class: 'res-status' }, statusBadge(r.status), h('span', { class: 'muted small', title: 'Payment' }, 'payment ', statusBadge(pay.status || 'none'))),
    h(
      'div',
      { class: 'res-foot' },
      r.total_price ? h('span', null, 'Total ', h('strong', null, money(r.total_price))) : null,
      pay.charged ? h('span', null, 'Charged ', h('strong', null, money(pay.charged))) : null,
      pay.refunded ? h('span', null, 'Refunded ', h('strong', null, money(pay.refunded))) : null,
      who ? h('span', null, 'Guest ', h('code', null, r.guest_id)) : null,
      h('span', null, 'Reservation ', shortId(r.reservation_id)),
      h('span', null, 'Changed ', agoEl(r.updated_at)),
    ),
    signal && cancellable(r) ? cancelButton(r, roomName, signal) : null,
  );
}

/**
 * A list of items kept by id, redrawn in place: an item whose position changed is rebuilt and
 * highlighted; new items are highlighted once the first load is done.
 */
function keyedList(container, key, build) {
  const els = new Map();
  const positions = new Map();
  let first = true;
  return {
    draw(items) {
      const ids = new Set(items.map(key));
      for (const [id, el] of els) {
        if (!ids.has(id)) {
          el.remove();
          els.delete(id);
          positions.delete(id);
        }
      }
      for (const item of items) {
        const id = key(item);
        const old = els.get(id);
        let el = old;
        if (!old || positions.get(id) !== item.position) {
          el = build(item);
          if (old) old.replaceWith(el);
          els.set(id, el);
          positions.set(id, item.position);
          if (!first) flash(el.querySelector('.room-card') || el);
        }
        container.appendChild(el);
      }
      first = false;
    },
    rebuild(id, item) {
      const old = els.get(id);
      if (!old) return;
      const el = build(item);
      old.replaceWith(el);
      els.set(id, el);
    },
  };
}

/** The newest items first, merged with the pages already loaded. */
function mergeNewestFirst(current, page, key) {
  const fresh = new Map(page.map((x) => [key(x), x]));
  const kept = current.filter((x) => !fresh.has(key(x)));
  return [...page, ...kept];
}

/**
 * The reservations of one `/v1/me/…` list, newest first: the first page read again at a position (a
 * live change), older pages on demand. `draw(problem)` shows `items`; `cursor` is the next older page.
 */
function reservationPages(path, signal, draw) {
  const pages = {
    items: [],
    cursor: null,
    async readNewest(position) {
      try {
        const page = await getJson(withQuery(path, { limit: PAGE, min_position: position, wait_ms: position ? 10000 : null }), { signal });
        if (pages.items.length === 0 || !pages.cursor) pages.cursor = page.next_cursor;
        pages.items = mergeNewestFirst(pages.items, page.items || [], (r) => r.reservation_id);
        draw(null);
      } catch (err) {
        if (!signal.aborted) draw(Problem.from(err));
      }
    },
    async readOlder(button) {
      button.disabled = true;
      try {
        const page = await getJson(withQuery(path, { limit: PAGE, cursor: pages.cursor }), { signal });
        pages.cursor = page.next_cursor;
        const have = new Set(pages.items.map((r) => r.reservation_id));
        pages.items = [...pages.items, ...(page.items || []).filter((r) => !have.has(r.reservation_id))];
        draw(null);
      } catch (err) {
        if (!signal.aborted) draw(Problem.from(err));
      } finally {
        button.disabled = false;
      }
    },
  };
  return pages;
}

async function renderGuest(view, ctx, indicator) {
  const { signal } = ctx;
  const names = roomNames(signal);
  const resList = h('ul', { class: 'res-list', 'aria-label': 'My reservations' });
  const resSection = h('section', { class: 'section', 'aria-labelledby': 'res-title' });
  const notesList = h('ul', { class: 'notes', 'aria-label': 'My notifications' });
  const notesSection = h('section', { class: 'panel', 'aria-labelledby': 'notes-title' });
  const more = h('button', { type: 'button', class: 'button', hidden: true }, 'Show older reservations');
  const pages = reservationPages('/v1/me/reservations', signal, (problem) => drawReservations(problem));
  let notes = [];

  const resKeyed = keyedList(resList, (r) => r.reservation_id, (r) => reservationCard(r, names.known.get(r.room_id), { signal }));
  const notesKeyed = keyedList(notesList, (n) => n.notification_id, (n) =>
    h('li', { dataset: { notificationId: n.notification_id, kind: n.kind } }, h('div', { class: 'note-kind' }, n.kind.replace(/_/g, ' '), ' · ', agoEl(n.created_at)), h('div', null, n.message)),
  );

  function drawReservations(problem) {
    replace(resSection, h('h2', { id: 'res-title' }, 'My reservations ', h('span', { class: 'count' }, String(pages.items.length) + (pages.cursor ? '+' : ''))));
    if (problem) resSection.appendChild(problemBox(problem));
    if (pages.items.length === 0 && !problem) {
      resSection.appendChild(empty('No reservations yet. Pick a room on the ', h('a', { href: '#/' }, 'rooms screen'), ' and reserve it through the API (POST /v1/reservations).'));
      return;
    }
    resSection.append(resList, more);
    resKeyed.draw(pages.items);
    more.hidden = !pages.cursor;
    // Room names come after the first draw; fill them in as they arrive.
    for (const r of pages.items) {
      if (!names.known.has(r.room_id)) {
        names.name(r.room_id).then((name) => {
          if (name && !signal.aborted) resKeyed.rebuild(r.reservation_id, pages.items.find((x) => x.reservation_id === r.reservation_id) || r);
        });
      }
    }
  }

  function drawNotes(problem) {
    replace(notesSection, h('h2', { id: 'notes-title' }, 'Notifications ', h('span', { class: 'count' }, String(notes.length))));
    if (problem) notesSection.appendChild(problemBox(problem));
    else if (notes.length === 0) notesSection.appendChild(empty('Nothing yet. You hear here when a reservation is confirmed, rejected or cancelled.'));
    else {
      notesSection.appendChild(notesList);
      notesKeyed.draw(notes.map((n) => ({ ...n, position: n.notification_id })));
    }
  }

  const readReservations = (position) => pages.readNewest(position);
  more.addEventListener('click', () => pages.readOlder(more));

  async function readNotes(position) {
    try {
      const page = await getJson(withQuery('/v1/me/notifications', { limit: 50, min_position: position, wait_ms: position ? 10000 : null }), { signal });
      notes = page.items || [];
      drawNotes(null);
    } catch (err) {
      if (!signal.aborted) drawNotes(Problem.from(err));
    }
  }

  view.append(h('div', { class: 'two-cols' }, h('div', null, resSection), h('div', null, notesSection)));
  replace(resSection, loading('Loading your reservations…'));
  replace(notesSection, loading('Loading your notifications…'));

  // Room names first, so the first draw already has them.
  const first = await getJson(withQuery('/v1/me/reservations', { limit: PAGE }), { signal }).catch((err) => ({ problem: Problem.from(err) }));
  if (signal.aborted) return;
  if (first.problem) drawReservations(first.problem);
  else {
    pages.items = first.items || [];
    pages.cursor = first.next_cursor;
    await Promise.all([...new Set(pages.items.map((r) => r.room_id))].map((id) => names.name(id)));
    if (signal.aborted) return;
    drawReservations(null);
  }
  await readNotes(null);

  followMe(ctx, indicator, {
    reservation: (position) => readReservations(position),
    notification: (position) => readNotes(position),
  });
}

async function renderHost(view, ctx, indicator) {
  const { signal, session } = ctx;
  const roomsGrid = h('ul', { class: 'room-grid', 'aria-label': 'My rooms' });
  const roomsSection = h('section', { class: 'section', 'aria-labelledby': 'rooms-title' });
  const resList = h('ul', { class: 'res-list wide', 'aria-label': 'Reservations of my rooms' });
  const resSection = h('section', { class: 'section', 'aria-labelledby': 'hres-title' });
  const more = h('button', { type: 'button', class: 'button', hidden: true }, 'Show older reservations');
  let rooms = [];
  const pages = reservationPages('/v1/me/rooms/reservations', signal, (problem) => drawReservations(problem));
  const names = new Map();

  const roomsKeyed = keyedList(roomsGrid, (r) => r.room_id, (r) => h('li', null, roomCard(r, { headingLevel: 'h3' })));
  const resKeyed = keyedList(resList, (r) => r.reservation_id, (r) => reservationCard(r, names.get(r.room_id), { who: true }));

  function drawRooms(problem) {
    replace(roomsSection, h('h2', { id: 'rooms-title' }, 'My rooms ', h('span', { class: 'count' }, String(rooms.length))));
    if (problem) roomsSection.appendChild(problemBox(problem));
    else if (rooms.length === 0) roomsSection.appendChild(empty('You have no rooms yet. Register one with POST /v1/rooms.'));
    else {
      roomsSection.appendChild(roomsGrid);
      roomsKeyed.draw(rooms);
    }
  }

  function drawReservations(problem) {
    replace(resSection, h('h2', { id: 'hres-title' }, 'Reservations of my rooms ', h('span', { class: 'count' }, String(pages.items.length) + (pages.cursor ? '+' : ''))));
    if (problem) resSection.appendChild(problemBox(problem));
    else if (pages.items.length === 0) resSection.appendChild(empty('No reservations of your rooms yet.'));
    else {
      resSection.append(resList, more);
      resKeyed.draw(pages.items);
      more.hidden = !pages.cursor;
    }
  }

  async function readRooms(position) {
    try {
      const path = withQuery('/v1/rooms', { host_id: session.sub, min_position: position, wait_ms: position ? 10000 : null });
      rooms = (await getAll(path, { signal, max: 2000 })).sort((a, b) => a.name.localeCompare(b.name));
      for (const r of rooms) names.set(r.room_id, r.name);
      drawRooms(null);
    } catch (err) {
      if (!signal.aborted) drawRooms(Problem.from(err));
    }
  }

  const readReservations = (position) => pages.readNewest(position);
  more.addEventListener('click', () => pages.readOlder(more));

  view.append(roomsSection, resSection);
  replace(roomsSection, loading('Loading your rooms…'));
  replace(resSection, loading('Loading the reservations of your rooms…'));
  await readRooms(null);
  await readReservations(null);

  followMe(ctx, indicator, {
    room: (position) => readRooms(position),
    // A reservation's position is a feed position: roomview has counted it once it is past it.
    reservation: (position) => Promise.all([readReservations(position), readRooms(position)]),
  });
}

function renderAdmin(view, ctx) {
  const card = (href, title, text) => h('li', null, h('a', { class: 'panel op-link', href }, h('h2', null, title), h('p', { class: 'muted' }, text)));
  view.append(
    h(
      'ul',
      { class: 'op-links', 'aria-label': 'Operator screens' },
      card('#/ops/sagas', 'Sagas', 'Every reservation saga by status, with its timeline; retry or skip a parked one.'),
      card('#/ops/projections', 'Projections', 'Read models: position, lag, dead letters, rebuilds.'),
      card('#/ops/events', 'Events', 'The global feed, one stream as of any time, and what one reservation caused.'),
      card('#/', 'Rooms', 'Every room, live, as anyone sees it.'),
    ),
  );
}

/**
 * Follow `GET /v1/me/live`; for each signal call the handler of its kind with its position.
 * Signals arriving while a read runs are merged: one more read at the latest position.
 */
function followMe(ctx, indicator, handlers) {
  const busy = new Map(); // kind → {running, next}
  const run = (kind, position) => {
    const handler = handlers[kind];
    if (!handler) return;
    const slot = busy.get(kind) || { running: false, next: null };
    busy.set(kind, slot);
    if (slot.running) {
      if (!slot.next || comparePositions(position, slot.next) === 1) slot.next = position;
      return;
    }
    slot.running = true;
    Promise.resolve(handler(position)).finally(() => {
      slot.running = false;
      const next = slot.next;
      slot.next = null;
      if (next && !ctx.signal.aborted) run(kind, next);
    });
  };
  live('/v1/me/live', ({ data }) => {
    if (data && data.kind) run(data.kind, data.position);
  }, { signal: ctx.signal, onStatus: (s, problem) => indicator.set(s, problem) });
}

export async function render(view, params, ctx) {
  const s = ctx.session;
  const indicator = liveIndicator();
  const titles = { guest: 'My stays', host: 'My rooms', admin: 'Operator' };
  const subtitles = {
    guest: 'Your reservations with their status and payment, and your notifications — live.',
    host: 'Your rooms and the reservations made for them — live.',
    admin: 'You are signed in as an administrator. The operator screens are yours.',
  };
  replace(
    view,
    pageHeader(
      titles[s.role] || 'Me',
      s.role === 'admin' ? null : indicator,
      h('p', { class: 'subtitle' }, subtitles[s.role] || '', ' ', h('span', null, 'Signed in as ', h('code', null, s.sub), s.exp ? ` until ${time(new Date(s.exp * 1000).toISOString())}` : '', '.')),
    ),
  );
  if (s.role === 'guest') await renderGuest(view, ctx, indicator);
  else if (s.role === 'host') await renderHost(view, ctx, indicator);
  else renderAdmin(view, ctx);
  const ticker = setInterval(() => refreshTimes(view), 15000);
  return () => clearInterval(ticker);
}
