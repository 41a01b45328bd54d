// Operators: one read model's dead letters (`#/ops/projections/:name/dead-letters`) — each event
// the model refused (retrying, or parked for an operator) with its error, attempts and next try,
// and the events of its aggregate held behind it. Retry and Skip, each after a confirmation,
// show what came of them (applied, skipped, parked again with the new error, or requested).

import { getJson, postJson } from './api.js';
import { agoEl, confirmAction, h, problemBox, refreshTimes, statusBadge } from './ui.js';
import { asProblem, count, every, opsFrame, say, statusRegion, streamLink, when } from './ops-common.js';

const POLL_MS = 3000;

/** What a retry's or skip's `outcome` means, for the message after it. */
function outcomeWords(result) {
  const released = result.released && result.released.length
    ? ` ${result.released.length} held event${result.released.length === 1 ? '' : 's'} applied after it (${result.released.join(', ')}).`
    : '';
  switch (result.outcome) {
    case 'applied': return ['ok', `The event at ${result.position} was applied.${released}`];
    case 'skipped': return ['ok', `The event at ${result.position} is skipped: it is never applied, not even by a rebuild.${released}`];
    case 'parked': return ['error', `Refused again, so it stays parked (attempt ${result.attempts}): ${result.error}`];
    case 'requested': return ['warn', `Recorded: no worker of this model has carried out the ${result.action} yet; one will when it runs.`];
    default: return ['warn', `${result.action}: ${result.outcome}`];
  }
}

/** The dead letters screen. */
export function render(view, params, ctx) {
  const name = params.name;
  const body = opsFrame(view, `Dead letters of ${name}`, {
    crumbs: [['#/ops/projections', 'Projections']],
    extra: [h('p', { class: 'subtitle' }, `Events the ${name} read model refused, and the events held behind them; read every ${POLL_MS / 1000} s.`)],
  });
  const outcome = statusRegion();
  const summary = h('p', { class: 'ops-letters-summary' });
  const list = h('div', { class: 'ops-letters' });
  body.append(outcome, summary, list);

  // Letters are updated in place by position, so a button keeps its focus across readings.
  const shown = new Map();

  const act = async (letter, action) => {
    const yes = await confirmAction(action === 'retry' ? `Retry the event at ${letter.position}?` : `Skip the event at ${letter.position}?`, {
      confirmLabel: action === 'retry' ? 'Retry' : 'Skip',
      danger: action === 'skip',
      detail: action === 'retry'
        ? `${name} applies ${letter.event_type} of ${letter.aggregate_type} ${letter.aggregate_id} again; if it succeeds, the events held behind it follow in order.`
        : `${name} never applies ${letter.event_type} of ${letter.aggregate_type} ${letter.aggregate_id} (a rebuild passes over it too); the events held behind it are applied.`,
    });
    if (!yes) return;
    say(outcome, 'warn', `${action === 'retry' ? 'Retrying' : 'Skipping'} the event at ${letter.position}…`);
    try {
      const result = await postJson(
        `/v1/admin/projections/${encodeURIComponent(name)}/dead-letters/${encodeURIComponent(letter.position)}/${action}`,
        undefined, { signal: ctx.signal });
      const [kind, words] = outcomeWords(result);
      say(outcome, kind, words);
    } catch (err) {
      outcome.replaceChildren(problemBox(asProblem(err)));
    }
    await tick();
  };

  const tick = async () => {
    let answer;
    try {
      answer = await getJson(`/v1/admin/projections/${encodeURIComponent(name)}/dead-letters`, { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted) return;
      list.replaceChildren(problemBox(asProblem(err)));
      shown.clear();
      return;
    }
    const refused = answer.items.filter((l) => l.state !== 'held').length;
    summary.replaceChildren(
      `Version ${answer.version}: `,
      h('strong', {}, `${answer.items.length} dead letter${answer.items.length === 1 ? '' : 's'}`),
      ` (${refused} refused, ${answer.items.length - refused} held), ${count(answer.skipped)} skipped so far.`);
    if (answer.items.length === 0) {
      shown.clear();
      list.replaceChildren(h('p', { class: 'empty' }, `${name} keeps no dead letters: every event was applied or skipped.`));
      return;
    }
    if (!list.querySelector('.ops-letter')) list.replaceChildren();
    const positions = new Set(answer.items.map((l) => l.position));
    for (const [position, card] of shown) {
      if (!positions.has(position)) {
        card.el.remove();
        shown.delete(position);
      }
    }
    let previous = null;
    for (const letter of answer.items) {
      let card = shown.get(letter.position);
      if (!card) {
        card = letterCard(letter, act);
        shown.set(letter.position, card);
      }
      card.update(letter);
      // Keep feed order.
      if (previous ? previous.nextSibling !== card.el : list.firstChild !== card.el) {
        if (previous) previous.after(card.el);
        else list.prepend(card.el);
      }
      previous = card.el;
    }
    refreshTimes(list);
  };
  every(POLL_MS, tick, ctx.signal);
}

/** One dead letter; its buttons stay the same elements while its facts are updated. */
function letterCard(first, act) {
  let letter = first;
  const retry = h('button', { type: 'button', class: 'button primary small', dataset: { action: 'retry' }, onclick: () => act(letter, 'retry') }, 'Retry');
  const skip = h('button', { type: 'button', class: 'button small', dataset: { action: 'skip' }, onclick: () => act(letter, 'skip') }, 'Skip');
  const state = h('span', {});
  const facts = h('dl', { class: 'facts' });
  const error = h('pre', { class: 'ops-json ops-letter-error' });
  const buttons = h('div', { class: 'ops-buttons' }, retry, skip);
  const title = h('h2', { class: 'ops-letter-title' });
  const el = h('article', { class: 'panel ops-letter', dataset: { position: first.position } },
    h('header', { class: 'ops-letter-head' }, title, state), facts, error, buttons);

  const update = (next) => {
    letter = next;
    el.dataset.state = letter.state;
    title.replaceChildren(letter.event_type, ' ', h('span', { class: 'ops-pos' }, `at ${letter.position}`));
    state.replaceChildren(statusBadge(letter.state));
    const item = (term, ...value) => [h('dt', {}, term), h('dd', {}, ...value)];
    facts.replaceChildren(
      ...item('Aggregate', streamLink(letter.aggregate_type, letter.aggregate_id, `${letter.aggregate_type} ${letter.aggregate_id}`)),
      ...item('Attempts', String(letter.attempts)),
      ...item('Kept since', when(letter.parked_at), ' (', agoEl(letter.parked_at), ')'),
      ...(letter.next_retry_at ? item('Next try', when(letter.next_retry_at), ' (', agoEl(letter.next_retry_at), ')') : []),
      ...(letter.request ? item('Asked', `${letter.request}, waiting for the model's worker`) : []),
      ...(letter.followers && letter.followers.length
        ? item('Held behind it', letter.followers.join(', '))
        : []));
    error.textContent = letter.error;
    error.setAttribute('aria-label', letter.state === 'held' ? 'Why it is held' : 'The model\'s error');
    // A held event waits for the one ahead of it: only that one can be retried or skipped.
    buttons.hidden = letter.state === 'held';
  };
  return { el, update };
}
