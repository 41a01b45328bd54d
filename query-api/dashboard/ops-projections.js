// Operators: every read model's position, lag (in events and in time, with a small trend of the
// last minutes), status, dead letters and skipped events, from `GET /v1/admin/projections`,
// read every two seconds. Rebuild asks for confirmation, then shows the new version's progress
// until it goes live (the switch).

import { getJson, postJson } from './api.js';
import { confirmAction, h, problemBox } from './ui.js';
import { asProblem, count, duration, every, opsFrame, say, sparkline, statusRegion } from './ops-common.js';

/** How often the list is read; faster while a rebuild this page asked for has not switched yet. */
const POLL_MS = 2000;
const POLL_REBUILDING_MS = 400;
/** How many readings a trend keeps (two minutes at the pace above). */
const TREND = 60;

/** Each model's recent readings, kept across visits so a trend survives leaving the screen. */
const trends = new Map();
/** Rebuilds asked for on this page: model → `{version, askedAt, switchedAt}`. */
const rebuilds = new Map();

/** A feed position's ordinal for progress estimates: SQLite's gap-free number, PostgreSQL's identity value. */
export function ordinal(position) {
  const [major, minor] = String(position).split('-').map(Number);
  const n = minor || major;
  return Number.isFinite(n) ? n : 0;
}

function remember(model) {
  const kept = trends.get(model.name) || [];
  kept.push({ at: Date.now(), events: model.lag_events, ms: model.lag_ms });
  while (kept.length > TREND) kept.shift();
  trends.set(model.name, kept);
  return kept;
}

/** The projections screen: `#/ops/projections`. */
export function render(view, params, ctx) {
  const body = opsFrame(view, 'Projections', {
    extra: [h('p', { class: 'subtitle' }, `Read models as the projector keeps them; read every ${POLL_MS / 1000} s.`)],
  });
  const problem = h('div', { class: 'ops-poll-problem' });
  const grid = h('div', { class: 'ops-proj-grid' });
  body.append(problem, grid);
  const cards = new Map();

  const tick = async () => {
    let models;
    try {
      models = await getJson('/v1/admin/projections', { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted) return;
      problem.replaceChildren(problemBox(asProblem(err)));
      return;
    }
    problem.replaceChildren();
    for (const model of models) {
      let card = cards.get(model.name);
      if (!card) {
        card = projectionCard(model.name, ctx);
        cards.set(model.name, card);
        grid.append(card.el);
      }
      card.update(model, remember(model));
    }
  };
  const pace = () => ([...rebuilds.values()].some((r) => !r.switchedAt) ? POLL_REBUILDING_MS : POLL_MS);
  every(pace, tick, ctx.signal);
}

/** One model's card; its parts are updated in place so focus and open panels survive each reading. */
function projectionCard(name, ctx) {
  const status = h('span', {});
  const version = h('span', { class: 'muted ops-version' });
  const position = h('dd', { class: 'mono' });
  const lagEvents = h('dd', { class: 'ops-lag' });
  const lagTime = h('dd', { class: 'ops-lag' });
  const letters = h('dd', {});
  const skipped = h('dd', {});
  const progress = h('div', { class: 'ops-rebuild', hidden: true });
  const outcome = statusRegion();
  const button = h('button', { type: 'button', class: 'button', dataset: { action: 'rebuild' } }, 'Rebuild');
  const el = h('article', { class: 'panel ops-proj', dataset: { model: name }, 'aria-labelledby': `ops-proj-${name}` },
    h('header', { class: 'ops-proj-head' }, h('h2', { id: `ops-proj-${name}` }, name), status, version),
    h('dl', { class: 'facts ops-proj-facts' },
      h('dt', {}, 'Position'), position,
      h('dt', {}, 'Lag (events)'), lagEvents,
      h('dt', {}, 'Lag (time)'), lagTime,
      h('dt', {}, 'Dead letters'), letters,
      h('dt', {}, 'Skipped'), skipped),
    progress,
    outcome,
    h('div', { class: 'ops-buttons' }, button));

  let last = null;
  button.addEventListener('click', async () => {
    const live = last ? last.version : '?';
    const yes = await confirmAction(`Rebuild ${name}?`, {
      confirmLabel: 'Rebuild',
      detail: `A new version is built from the whole feed beside the live one (version ${live}), which keeps answering; the new one goes live once it has caught up.`,
    });
    if (!yes) return;
    button.disabled = true;
    try {
      const started = await postJson(`/v1/admin/projections/${encodeURIComponent(name)}/rebuild`, undefined, { signal: ctx.signal });
      rebuilds.set(name, { version: started.version, askedAt: Date.now(), switchedAt: null });
      say(outcome, 'warn', `Rebuilding ${name} as version ${started.version}…`);
    } catch (err) {
      button.disabled = false;
      outcome.replaceChildren(problemBox(asProblem(err)));
    }
  });

  const update = (model, trend) => {
    last = model;
    status.replaceChildren(projectionBadge(model.status));
    version.textContent = `version ${model.version}`;
    position.textContent = model.position;
    const events = trend.map((t) => t.events);
    const times = trend.map((t) => t.ms);
    lagEvents.replaceChildren(
      h('span', { class: 'ops-big' }, `${count(model.lag_events)} event${model.lag_events === 1 ? '' : 's'}`),
      sparkline(events, `Lag in events over the last ${duration(trend.length * POLL_MS)}: now ${model.lag_events}, at most ${Math.max(...events)}`));
    lagTime.replaceChildren(
      h('span', { class: 'ops-big', title: 'How long the oldest event not yet applied has waited' }, duration(model.lag_ms)),
      sparkline(times, `Age of the oldest unapplied event over the last ${duration(trend.length * POLL_MS)}: now ${duration(model.lag_ms)}`));
    letters.replaceChildren(...deadLetterSummary(model));
    el.dataset.parked = String((model.dead_letters || []).filter((l) => l.state === 'parked').length);
    skipped.textContent = count(model.skipped);

    const asked = rebuilds.get(name);
    if (model.rebuild) {
      const done = ordinal(model.rebuild.position);
      const total = done + model.rebuild.lag_events;
      progress.hidden = false;
      progress.replaceChildren(
        h('label', { for: `ops-progress-${name}` }, `Version ${model.rebuild.version} rebuilding: `,
          `${count(model.rebuild.lag_events)} event${model.rebuild.lag_events === 1 ? '' : 's'} to go, at position ${model.rebuild.position}`),
        h('progress', { id: `ops-progress-${name}`, max: String(Math.max(1, total)), value: String(Math.min(done, total)) },
          `${total ? Math.round((done / total) * 100) : 0}%`));
    } else {
      progress.hidden = true;
      progress.replaceChildren();
    }
    if (asked && !asked.switchedAt && model.version >= asked.version && !model.rebuild) {
      asked.switchedAt = Date.now();
      say(outcome, 'ok', `Switched: version ${model.version} is live, ${duration(asked.switchedAt - asked.askedAt)} after the request.`);
    }
    // One rebuild at a time: the button waits for the switch.
    button.disabled = Boolean(model.rebuild) || Boolean(asked && !asked.switchedAt);
  };
  return { el, update };
}

/** A projection's status as a badge: running is the good state here (for a saga it means "not done"). */
function projectionBadge(status) {
  const tones = { running: 'good', catching_up: 'wait', rebuilding: 'info' };
  return h('span', { class: `badge tone-${tones[status] || 'muted'}`, dataset: { status } }, String(status).replace(/_/g, ' '));
}

/** Dead letters by state, and a link to them. */
function deadLetterSummary(model) {
  const by = { parked: 0, retrying: 0, held: 0 };
  for (const letter of model.dead_letters || []) by[letter.state] = (by[letter.state] || 0) + 1;
  const total = (model.dead_letters || []).length;
  const link = h('a', { href: `#/ops/projections/${encodeURIComponent(model.name)}/dead-letters` }, 'Open');
  if (!total) return [h('span', { class: 'muted' }, 'none'), ' — ', link];
  const parts = Object.entries(by).filter(([, n]) => n > 0).map(([state, n]) => `${n} ${state}`);
  return [h('span', { class: by.parked ? 'ops-error' : '' }, parts.join(' · ')), ' — ', link];
}
