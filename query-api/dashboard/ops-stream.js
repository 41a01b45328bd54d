// Operators: one stream (`#/ops/events/:type/:id`), in the spirit of KurrentDB's stream browser —
// its events, and the aggregate's state as of any of them: a slider over the events asks
// `GET /v1/admin/streams/{type}/{id}?until_sequence=N` (a time, `?as_of=`) for the state folded up
// to that point, and the screen says what the chosen event changed.

import { getJson } from './api.js';
import { h, problemBox } from './ui.js';
import { asProblem, jsonBlock, opsFrame, when } from './ops-common.js';

/** `{path: value}` of a JSON value's leaves (arrays and objects walked), for a change list. */
export function leaves(value, path = '', out = new Map()) {
  if (value !== null && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    if (entries.length === 0) out.set(path || '(whole)', JSON.stringify(value));
    for (const [key, v] of entries) leaves(v, path ? `${path}.${key}` : key, out);
  } else {
    out.set(path || '(whole)', JSON.stringify(value));
  }
  return out;
}

/** What changed between two states: `[{path, before, after}]` (absent is `undefined`). */
export function changes(before, after) {
  const a = leaves(before);
  const b = leaves(after);
  const out = [];
  for (const [path, value] of b) if (a.get(path) !== value) out.push({ path, before: a.get(path), after: value });
  for (const [path, value] of a) if (!b.has(path)) out.push({ path, before: value, after: undefined });
  return out;
}

/** One stream's screen. */
export async function renderStream(view, params, ctx) {
  const { type, id } = params;
  const base = `/v1/admin/streams/${encodeURIComponent(type)}/${encodeURIComponent(id)}`;
  const body = opsFrame(view, `${type} stream`, {
    crumbs: [['#/ops/events', 'Events']],
    extra: [h('p', { class: 'subtitle mono' }, id)],
  });
  let whole;
  try {
    whole = await getJson(base, { signal: ctx.signal });
  } catch (err) {
    body.append(problemBox(asProblem(err)));
    return;
  }
  const events = whole.events;
  const n = events.length;
  const first = events[0];
  const correlation = first && first.metadata && first.metadata.correlation_id;

  const links = h('p', { class: 'ops-links' },
    `${n} event${n === 1 ? '' : 's'}, from `, when(first.recorded_at), ' to ', when(events[n - 1].recorded_at), '.',
    type === 'ReservationSaga' || type === 'Reservation' ? [' ', h('a', { href: `#/ops/sagas/${id}` }, 'Saga timeline')] : '',
    correlation ? [' · ', h('a', { href: `#/ops/correlations/${encodeURIComponent(correlation)}` }, 'Causation tree of its first event\'s correlation')] : '');

  // The slider: position k (1..n) = the state after the k-th event.
  const slider = h('input', { id: 'ops-as-of', type: 'range', min: '1', max: String(n), step: '1', value: String(n), 'aria-describedby': 'ops-as-of-note' });
  const sliderLabel = h('label', { for: 'ops-as-of' });
  const timeInput = h('input', { id: 'ops-as-of-time', type: 'datetime-local', step: '0.001', value: events[n - 1].recorded_at.slice(0, 23) });
  const timeForm = h('form', { class: 'ops-inline-form' },
    h('div', { class: 'field' }, h('label', { for: 'ops-as-of-time' }, 'Or as of a time (UTC)'), timeInput),
    h('button', { type: 'submit', class: 'button' }, 'Show'));
  const note = h('p', { id: 'ops-as-of-note', class: 'muted ops-note' },
    'Arrow keys move one event. The state comes from the server, folded from the stream\'s first events up to the chosen one.');
  const scrubber = h('section', { class: 'panel ops-scrubber', 'aria-label': 'State as of' },
    h('div', { class: 'ops-slider' }, sliderLabel, slider,
      h('div', { class: 'ops-slider-ends muted' }, h('span', {}, '1'), h('span', {}, String(n)))),
    timeForm, note);

  const list = h('ol', { class: 'ops-stream-events' });
  const items = events.map((event, i) => {
    const item = h('li', { dataset: { sequence: String(event.sequence) } },
      h('button', { type: 'button', class: 'ops-ev-pick', onclick: () => choose(i + 1) },
        h('span', { class: 'ops-seq' }, `#${event.sequence}`), ' ',
        h('span', { class: 'ops-ev-type' }, event.event_type)),
      ' ', when(event.recorded_at), h('span', { class: 'ops-pos' }, ` position ${event.position}`),
      h('details', { class: 'ops-details' }, h('summary', {}, 'Payload and metadata'),
        jsonBlock(event.payload, 'Payload'), jsonBlock(event.metadata, 'Metadata')));
    list.append(item);
    return item;
  });

  const stateBox = h('div', { class: 'ops-state' });
  const changeBox = h('div', { class: 'ops-changes' });
  body.append(links, scrubber,
    h('div', { class: 'ops-stream-cols' },
      h('section', { class: 'panel', 'aria-labelledby': 'ops-events-title' }, h('h2', { id: 'ops-events-title' }, 'Events'), list),
      h('section', { class: 'panel', 'aria-labelledby': 'ops-state-title', 'aria-live': 'polite' },
        h('h2', { id: 'ops-state-title' }, 'State'), changeBox, stateBox)));

  // Answers already asked for, by query (`until_sequence=3`, `as_of=…`).
  const answers = new Map([[`until_sequence=${n}`, whole]]);
  const stateAt = (query) => {
    if (!answers.has(query)) answers.set(query, getJson(`${base}?${query}`, { signal: ctx.signal }));
    return answers.get(query);
  };
  const NOTHING = { events: [], state: null };

  let asked = 0;
  /** Shows the state `query` answers, beside the state one event earlier, and what that event changed. */
  const show = async (query, label) => {
    asked += 1;
    const mine = asked;
    let now;
    let before;
    try {
      now = await stateAt(query);
      const upTo = now.events.length;
      before = upTo > 1 ? await stateAt(`until_sequence=${upTo - 1}`) : NOTHING;
    } catch (err) {
      if (mine !== asked || ctx.signal.aborted) return;
      answers.delete(query);
      stateBox.replaceChildren(problemBox(asProblem(err)));
      return;
    }
    if (mine !== asked) return;
    const upTo = now.events.length;
    sliderLabel.replaceChildren(...label(upTo));
    items.forEach((item, i) => {
      item.classList.toggle('ops-future', i >= upTo);
      item.classList.toggle('ops-chosen', i === upTo - 1);
    });
    if (upTo === 0) {
      changeBox.replaceChildren(h('p', { class: 'muted' }, 'No event had been recorded by then: the stream did not exist yet.'));
      stateBox.replaceChildren();
      return;
    }
    if (now.state === null || now.state === undefined) {
      changeBox.replaceChildren();
      stateBox.replaceChildren(h('p', {}, 'A saga keeps no folded state here: its state is its ',
        h('a', { href: `#/ops/sagas/${id}` }, 'timeline'), '.'));
      return;
    }
    const event = now.events[upTo - 1];
    const changed = changes(before.state, now.state);
    changeBox.replaceChildren(
      h('h3', {}, `What #${event.sequence} ${event.event_type} changed`),
      changed.length
        ? h('ul', { class: 'ops-change-list' }, ...changed.slice(0, 40).map((c) => h('li', {},
          h('code', {}, c.path), ': ',
          h('del', {}, c.before === undefined ? '(none)' : c.before), ' → ',
          h('ins', {}, c.after === undefined ? '(gone)' : c.after))),
          changed.length > 40 ? h('li', {}, `and ${changed.length - 40} more`) : '')
        : h('p', { class: 'muted' }, 'Nothing in the folded state.'));
    stateBox.replaceChildren(jsonBlock(now.state, `State after event ${upTo}`));
  };

  const choose = (k) => {
    slider.value = String(k);
    show(`until_sequence=${k}`, (upTo) => [
      h('strong', {}, `State after event ${upTo} of ${n}`), ': ',
      `#${events[upTo - 1].sequence} ${events[upTo - 1].event_type}, recorded `, when(events[upTo - 1].recorded_at)]);
  };
  slider.addEventListener('input', () => choose(Number(slider.value)));
  timeForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!timeInput.value) return;
    const asOf = new Date(`${timeInput.value}Z`).toISOString();
    show(`as_of=${encodeURIComponent(asOf)}`, (upTo) => {
      if (upTo > 0) slider.value = String(upTo);
      return [h('strong', {}, `State as of ${asOf}`), `: ${upTo} of ${n} events recorded by then`];
    });
  });
  choose(n);
}
