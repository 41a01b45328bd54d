// `#/rooms/:id` — one room: its facts and totals, the next nights, its booked stays, and its
// reviews with the host's replies. Public, live: re-read whenever the room changes.

import { getJson, live, withQuery, Problem } from './api.js';
import { h, replace, pageHeader, loading, empty, problemBox, showProblem, money, date, time, agoEl, refreshTimes, statusBadge, liveIndicator, flash, shortId } from './ui.js';
import { occupancyStrip, countTiles, ratingText, comparePositions, NIGHTS } from './rooms.js';

function nightsBetween(checkIn, checkOut) {
  return Math.round((Date.parse(`${checkOut}T00:00:00Z`) - Date.parse(`${checkIn}T00:00:00Z`)) / 86400000);
}

function stars(rating) {
  const n = Math.max(0, Math.min(5, Number(rating) || 0));
  return h('span', { class: 'stars', role: 'img', 'aria-label': `${n} of 5 stars` }, '★'.repeat(n) + '☆'.repeat(5 - n));
}

function stat(label, value, note, key) {
  return h('div', { class: 'stat', dataset: { stat: key } }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value), note && h('div', { class: 'stat-note' }, note));
}

function bookedTable(room) {
  const stays = [...(room.booked || [])].sort((a, b) => a.check_in.localeCompare(b.check_in));
  if (stays.length === 0) return empty('No confirmed stays ahead. Pending reservations hold their nights but show here once confirmed.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'booked-table' },
      h('caption', { class: 'visually-hidden' }, 'Confirmed stays that have not ended'),
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Check-in'), h('th', { scope: 'col' }, 'Check-out'), h('th', { scope: 'col', class: 'num' }, 'Nights'), h('th', { scope: 'col' }, 'Reservation'))),
      h(
        'tbody',
        null,
        stays.map((s) =>
          h('tr', { dataset: { reservationId: s.reservation_id } }, h('td', { class: 'nowrap' }, date(s.check_in)), h('td', { class: 'nowrap' }, date(s.check_out)), h('td', { class: 'num' }, String(nightsBetween(s.check_in, s.check_out))), h('td', null, shortId(s.reservation_id))),
        ),
      ),
    ),
  );
}

function reviewList(reviews) {
  if (reviews.length === 0) return empty('No reviews yet. Guests review a room after a confirmed stay.');
  return h(
    'div',
    { class: 'reviews' },
    [...reviews].reverse().map((r) =>
      h(
        'article',
        { class: 'review', dataset: { reviewId: r.review_id } },
        h('header', null, stars(r.rating), h('span', { class: 'muted' }, 'A guest · ', agoEl(r.created_at))),
        r.comment ? h('blockquote', null, r.comment) : h('p', { class: 'muted' }, 'No comment.'),
        r.reply ? h('div', { class: 'reply' }, h('strong', null, 'The host replied'), h('p', null, r.reply)) : null,
      ),
    ),
  );
}

export async function render(view, params, ctx) {
  const id = params.id;
  const signal = ctx.signal;
  const indicator = liveIndicator();
  replace(view, h('p', { class: 'breadcrumb' }, h('a', { href: '#/' }, '← All rooms')), pageHeader('Room'), loading('Loading the room…'));

  let room = null;
  let reviews = [];
  let reviewsProblem = null;

  const header = () =>
    pageHeader(
      room.name,
      statusBadge(room.listed ? 'listed' : 'delisted'),
      indicator,
      h('p', { class: 'subtitle' }, room.address),
    );

  const statsEl = h('section', { class: 'stats', 'aria-label': 'Totals' });
  const aboutEl = h('section', { class: 'panel', 'aria-labelledby': 'about-title' });
  const stripEl = h('section', { class: 'panel', 'aria-labelledby': 'nights-title' });
  const bookedEl = h('section', { class: 'panel', 'aria-labelledby': 'booked-title' });
  const reviewsEl = h('section', { class: 'panel', 'aria-labelledby': 'reviews-title' });
  const headerSlot = h('div');

  function draw(changed) {
    replace(headerSlot, header());
    const c = room.reservations || {};
    replace(
      statsEl,
      stat('Price', money(room.nightly_price), 'per night', 'price'),
      stat('Sleeps', String(room.capacity), room.capacity === 1 ? 'guest' : 'guests', 'capacity'),
      stat('Confirmed', String(c.confirmed || 0), `${c.pending || 0} pending · ${c.cancelled || 0} cancelled · ${c.rejected || 0} rejected`, 'reservations'),
      stat('Charged', money(room.payments && room.payments.charged), `refunded ${money(room.payments && room.payments.refunded)}`, 'payments'),
      stat('Rating', room.reviews && room.reviews.count ? `★ ${room.reviews.average_rating.toFixed(1)}` : '—', `${(room.reviews && room.reviews.count) || 0} reviews`, 'rating'),
    );
    replace(
      aboutEl,
      h('h2', { id: 'about-title' }, 'About'),
      room.description ? h('p', { class: 'description' }, room.description) : h('p', { class: 'muted' }, 'No description.'),
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'Host'), h('dd', null, h('code', null, room.host_id)),
        h('dt', null, 'Room id'), h('dd', null, h('code', null, room.room_id)),
        h('dt', null, 'Listing'), h('dd', null, room.listed ? 'Listed: guests can book it' : 'Not listed: no new reservations'),
        h('dt', null, 'Last change'), h('dd', null, time(room.updated_at), ' (', agoEl(room.updated_at), ')'),
        h('dt', null, 'Feed position'), h('dd', null, h('code', null, room.position)),
      ),
    );
    replace(
      stripEl,
      h('h2', { id: 'nights-title' }, `The next ${NIGHTS} nights`),
      occupancyStrip(room.booked, { large: true }),
      countTiles(room.reservations),
    );
    replace(bookedEl, h('h2', { id: 'booked-title' }, 'Booked stays ', h('span', { class: 'count' }, String((room.booked || []).length))), bookedTable(room));
    replace(
      reviewsEl,
      h('h2', { id: 'reviews-title' }, 'Reviews ', h('span', { class: 'count' }, String(reviews.length))),
      room.reviews && room.reviews.count ? h('p', null, ratingText(room.reviews)) : null,
      reviewsProblem ? problemBox(reviewsProblem) : reviewList(reviews),
    );
    if (changed) for (const el of [statsEl, stripEl, bookedEl]) flash(el);
  }

  async function read(position) {
    const fresh = position ? { min_position: position, wait_ms: 10000 } : {};
    const [r, rv] = await Promise.all([
      getJson(withQuery(`/v1/rooms/${encodeURIComponent(id)}`, fresh), { signal }),
      getJson(withQuery(`/v1/rooms/${encodeURIComponent(id)}/reviews`, fresh), { signal }).then(
        (answer) => ({ items: answer.items || [] }),
        (err) => ({ problem: Problem.from(err) }),
      ),
    ]);
    return { r, rv };
  }

  try {
    const { r, rv } = await read(null);
    if (signal.aborted) return undefined;
    room = r;
    reviews = rv.items || [];
    reviewsProblem = rv.problem || null;
  } catch (err) {
    if (signal.aborted) return undefined;
    const p = Problem.from(err);
    return void showProblem(view, p.code === 'room_not_found' ? new Problem({ ...p, title: 'There is no such room', detail: p.detail }) : p);
  }

  replace(
    view,
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/' }, '← All rooms')),
    headerSlot,
    statsEl,
    h('div', { class: 'two-cols' }, h('div', null, stripEl, bookedEl, aboutEl), h('div', null, reviewsEl)),
  );
  draw(false);

  let reading = Promise.resolve();
  let wanted = null;
  live(
    '/v1/live/rooms',
    ({ data }) => {
      if (!data || data.room_id !== room.room_id) return;
      if (comparePositions(data.position, room.position) !== 1) return;
      wanted = data.position;
      reading = reading.then(async () => {
        if (!wanted || signal.aborted) return;
        const position = wanted;
        wanted = null;
        try {
          const { r, rv } = await read(position);
          if (signal.aborted || comparePositions(r.position, room.position) === -1) return;
          room = r;
          if (rv.items) {
            reviews = rv.items;
            reviewsProblem = null;
          } else reviewsProblem = rv.problem;
          draw(true);
        } catch (err) {
          if (!signal.aborted) console.warn('the room could not be read again after a change', err);
        }
      });
    },
    { signal, onStatus: (s, problem) => indicator.set(s, problem) },
  );

  const ticker = setInterval(() => refreshTimes(view), 15000);
  return () => clearInterval(ticker);
}
