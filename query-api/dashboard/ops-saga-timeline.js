// One saga's timeline (`#/ops/sagas/:id`), in the spirit of Temporal's workflow view: a summary,
// Retry and Skip for a parked saga, every step with the commands it sent and the events they
// caused (from the correlation, matched by command id), its attempts, outcome and times on a
// shared time axis with the deadlines, and the saga's full event history with positions.
// It follows the feed live, so a retried saga is seen moving to its end.

import { getJson, postJson } from './api.js';
import { confirmAction, h, liveIndicator, money, statusBadge } from './ui.js';
import {
  between, duration, jsonDetails, onFeed, opsFrame, problemIn, say, statusRegion, streamLink, svg, tryJson, when,
} from './ops-common.js';

/**
 * What each step sends: `[aggregate, command, command id suffix]`; the suffix names the command in
 * `saga:<id>:<suffix>`, the command id the saga gives it. `optional` ones show only when sent.
 */
const COMMANDS = {
  start: [],
  hold: [{ to: 'Room', command: 'HoldNights', key: 'hold' }],
  charge: [
    { to: 'Payment', command: 'RequestCharge', key: 'request_charge' },
    { to: 'provider', command: 'charge' },
    { to: 'Payment', command: 'RecordApproval/RecordDecline', key: 'record_charge' },
    { to: 'Payment', command: 'RecordFailure', key: 'record_failure', optional: true },
  ],
  confirm: [
    { to: 'Room', command: 'ConfirmBooking', key: 'confirm_booking' },
    { to: 'Reservation', command: 'Confirm', key: 'confirm' },
  ],
  void: [{ to: 'provider', command: 'void' }, { to: 'Payment', command: 'VoidCharge', key: 'void' }],
  refund: [{ to: 'provider', command: 'refund' }, { to: 'Payment', command: 'Refund', key: 'refund' }],
  release: [{ to: 'Room', command: 'ReleaseNights', key: 'release' }],
  reject: [{ to: 'Reservation', command: 'Reject', key: 'reject' }],
  complete_cancellation: [{ to: 'Reservation', command: 'CompleteCancellation', key: 'complete_cancellation' }],
};

/** Steps that undo something (a compensation). */
const COMPENSATING = new Set(['void', 'refund', 'release', 'reject', 'complete_cancellation']);

/** A rejection reason (`{"code": …, "detail"?}`) in words. */
function reason(r) {
  if (!r) return '';
  if (typeof r === 'string') return r.replaceAll('_', ' ');
  const code = (r.code || r.kind || '').replaceAll('_', ' ');
  return r.detail ? `${code}: ${r.detail}` : code;
}

/** A step's outcome (`{"kind": …}`) in words. */
export function outcomeText(outcome) {
  if (!outcome) return '';
  switch (outcome.kind) {
    case 'started': return 'reservation read';
    case 'held': return `nights held for ${money(outcome.price)}`;
    case 'hold_refused': return `the room refused: ${reason(outcome.reason)}`;
    case 'charge_approved': return `charge approved (provider ref ${outcome.provider_ref})`;
    case 'charge_declined': return `charge declined: ${outcome.reason}`;
    case 'confirmed': return 'booking and reservation confirmed';
    case 'cancelled_before_confirm': return 'cancelled before the confirmation';
    case 'voided': return outcome.amount ? `charge voided, ${money(outcome.amount)} went back` : 'nothing had been taken';
    case 'refunded': return `${money(outcome.amount)} refunded`;
    case 'released': return 'nights released';
    case 'rejected': return 'reservation rejected';
    case 'cancellation_completed': return 'reservation cancelled';
    case 'skipped': return `skipped by ${outcome.by}`;
    case 'deadline_fired': return 'no answer before the payment deadline: the charge is recorded as failed';
    default: return outcome.kind || JSON.stringify(outcome);
  }
}

/** How a saga ended (`SagaCompleted.outcome`), in words. */
function endText(outcome) {
  if (!outcome) return '';
  return outcome.reason ? `${outcome.kind}: ${reason(outcome.reason)}` : outcome.kind;
}

/** One timeline entry as a sentence. */
function sentence(entry) {
  const d = entry.detail || {};
  switch (entry.event_type) {
    case 'SagaStarted': {
      const stay = d.stay ? `${d.stay.check_in} → ${d.stay.check_out}` : '';
      return `Took on the reservation: room ${d.room_id}, ${stay}, ${d.guests} guest${d.guests === 1 ? '' : 's'}, guest ${d.guest_id}.`;
    }
    case 'StepRequested': return `Began ${d.step}: it calls the payment provider.`;
    case 'StepSucceeded': return `${d.step} succeeded after ${duration(between(d.started_at, entry.at))}: ${outcomeText(d.outcome)}.`;
    case 'StepFailed': return `${d.step} failed (attempt ${d.attempt}): ${d.error}. ${d.retry_at ? `Next try ${duration(between(entry.at, d.retry_at))} later.` : 'No retry.'}`;
    case 'DeadlineSet': return `The ${d.deadline} deadline falls ${duration(between(entry.at, d.at))} after this.`;
    case 'DeadlineFired': return `The ${d.deadline} deadline passed before the charge had an answer.`;
    case 'CompensationStarted': {
      const why = d.reason && d.reason.kind === 'rejected' ? `rejected (${reason(d.reason.reason)})` : 'cancelled';
      return `Began undoing what it did: the reservation is ${why}.`;
    }
    case 'SagaCompleted': return `Ended: ${endText(d.outcome)}.`;
    case 'SagaParked': return `Parked at ${d.step}: ${d.error}. It waits for an operator.`;
    case 'SagaResumed': return `${d.by} chose to ${d.action} the parked step.`;
    default: return entry.event_type;
  }
}

/**
 * The saga's steps from its timeline: each run of a step with when it began and ended, its
 * failed attempts, its outcome, whether it parked, and the positions of its events.
 */
export function stepsOf(timeline) {
  const steps = [];
  const open = (name, at) => {
    let step = [...steps].reverse().find((s) => s.step === name && !s.outcome);
    if (!step) {
      step = { step: name, compensates: COMPENSATING.has(name), begin: at, end: null, failures: [], outcome: null, parked: null, positions: [] };
      steps.push(step);
    }
    return step;
  };
  for (const entry of timeline) {
    const d = entry.detail || {};
    switch (entry.event_type) {
      case 'SagaStarted': {
        const step = open('start', entry.at);
        step.outcome = { kind: 'started' };
        step.end = entry.at;
        step.positions.push(entry.position);
        break;
      }
      case 'StepRequested':
        open(d.step, entry.at).positions.push(entry.position);
        break;
      case 'StepFailed': {
        const step = open(d.step, entry.at);
        step.failures.push({ attempt: d.attempt, error: d.error, at: entry.at, retry_at: d.retry_at, position: entry.position });
        step.positions.push(entry.position);
        break;
      }
      case 'StepSucceeded': {
        const step = open(d.step, d.started_at || entry.at);
        if (d.started_at && Date.parse(d.started_at) < Date.parse(step.begin)) step.begin = d.started_at;
        step.outcome = d.outcome;
        step.end = entry.at;
        step.positions.push(entry.position);
        break;
      }
      case 'DeadlineFired': {
        // The charge waited for an answer until the deadline: that ends the step.
        const step = [...steps].reverse().find((s) => s.step === 'charge' && !s.outcome);
        if (step) {
          step.outcome = { kind: 'deadline_fired' };
          step.end = entry.at;
          step.positions.push(entry.position);
        }
        break;
      }
      case 'SagaParked': {
        const step = open(d.step, entry.at);
        step.parked = { error: d.error, at: entry.at, position: entry.position };
        step.positions.push(entry.position);
        break;
      }
      default:
        break;
    }
  }
  return steps;
}

/** The deadlines the saga set, each with whether (and when) it fired. */
function deadlinesOf(timeline) {
  const set = [];
  for (const entry of timeline) {
    const d = entry.detail || {};
    if (entry.event_type === 'DeadlineSet') set.push({ deadline: d.deadline, at: d.at, setAt: entry.at, fired: null });
    if (entry.event_type === 'DeadlineFired') {
      const open = set.find((x) => x.deadline === d.deadline && !x.fired);
      if (open) open.fired = entry.at;
    }
  }
  return set;
}

/** One saga's timeline: `#/ops/sagas/:id`. */
export async function renderSaga(view, params, ctx) {
  const id = params.id;
  const indicator = liveIndicator();
  const body = opsFrame(view, 'Saga', { crumbs: [['#/ops/sagas', 'Sagas']], extra: [indicator] });
  const summary = h('section', { class: 'ops-saga-summary', 'aria-label': 'Summary' });
  const actions = h('section', { class: 'ops-saga-actions panel', 'aria-label': 'Operator actions', hidden: true });
  const outcome = statusRegion();
  const steps = h('section', { class: 'ops-saga-steps', 'aria-labelledby': 'ops-steps-title' });
  const history = h('section', { class: 'ops-saga-history', 'aria-labelledby': 'ops-history-title' });
  body.append(summary, actions, outcome, steps, history);

  // After a Retry or Skip: what the operator asked, to say where the saga went once it moves.
  let resumed = null;
  let saga = null;
  // Reads may overlap (the feed and an action both ask); only the latest one is shown.
  let reads = 0;

  const load = async () => {
    reads += 1;
    const mine = reads;
    let next;
    try {
      next = await getJson(`/v1/admin/sagas/${encodeURIComponent(id)}`, { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted || mine !== reads) return;
      summary.replaceChildren();
      problemIn(summary, err);
      return;
    }
    saga = next;
    const lastPosition = saga.timeline.length ? saga.timeline[saga.timeline.length - 1].position : '';
    // What the saga's commands caused, from the correlations model (it may lag behind a moment).
    const caused = await tryJson(`/v1/admin/correlations/${encodeURIComponent(id)}?min_position=${encodeURIComponent(lastPosition)}&wait_ms=2000`, { signal: ctx.signal });
    if (ctx.signal.aborted || mine !== reads) return;
    showSummary(summary, saga);
    showActions(actions, saga, act);
    showSteps(steps, saga, caused.ok ? caused.value.events : null);
    showHistory(history, saga);
    if (resumed && saga.status !== 'parked') {
      say(outcome, saga.status === 'running' ? 'warn' : 'ok',
        `After the ${resumed.action}, the saga is ${saga.status}`, saga.step ? ` (step ${saga.step})` : '', '.');
      if (saga.status !== 'running') resumed = null;
    }
  };

  const act = async (action) => {
    const asked = action === 'retry'
      ? confirmAction(`Retry the parked ${saga.step} step?`, {
        confirmLabel: 'Retry', detail: `Saga ${id} tries its ${saga.step} step again at once.`,
      })
      : confirmAction(`Skip the parked ${saga.step} step?`, {
        confirmLabel: 'Skip', danger: true,
        detail: `Saga ${id} gives the step up: a compensation step counts as done; a forward step rejects the reservation.`,
      });
    if (!(await asked)) return;
    try {
      const answer = await postJson(`/v1/admin/sagas/${encodeURIComponent(id)}/${action}`, undefined, { signal: ctx.signal });
      resumed = answer;
      say(outcome, 'ok', `${action === 'retry' ? 'Retry' : 'Skip'} recorded at position ${answer.position}; the saga driver takes it on.`);
    } catch (err) {
      outcome.replaceChildren();
      problemIn(outcome, err);
    }
    await load();
  };

  // Its own stream, and the reservation (same id), move it on.
  onFeed((event) => event.aggregate_id === id, () => load(), { signal: ctx.signal, indicator });
  await load();
}

function showSummary(where, saga) {
  const ended = [...saga.timeline].reverse().find((e) => e.event_type === 'SagaCompleted');
  const first = saga.timeline[0];
  const last = saga.timeline[saga.timeline.length - 1];
  const item = (term, ...value) => [h('dt', {}, term), h('dd', {}, ...value)];
  where.replaceChildren(
    h('h2', { class: 'mono ops-saga-id' }, saga.saga_id),
    h('dl', { class: 'facts' },
      ...item('Status', statusBadge(saga.status)),
      ...item('Step', saga.step || '—'),
      ...(ended ? item(saga.status === 'completed' || saga.status === 'compensated' ? 'Outcome' : 'Ended before as', endText(ended.detail.outcome)) : []),
      ...(saga.last_error ? item('Last error', h('span', { class: 'ops-error' }, saga.last_error)) : []),
      ...(saga.next_attempt_at ? item('Next attempt', when(saga.next_attempt_at)) : []),
      ...(first ? item('Began', when(first.at)) : []),
      ...(last ? item('Last event', when(last.at), ` — position ${last.position}, ${saga.timeline.length} events`) : []),
      ...(first && last ? item('Took', duration(between(first.at, last.at))) : [])),
    h('p', { class: 'ops-links' },
      streamLink('Reservation', saga.reservation_id, 'Reservation stream'), ' · ',
      streamLink('ReservationSaga', saga.saga_id, 'Saga stream'), ' · ',
      h('a', { href: `#/ops/correlations/${saga.reservation_id}` }, 'Everything this reservation caused')));
}

function showActions(where, saga, act) {
  where.hidden = saga.status !== 'parked';
  if (where.hidden) {
    where.replaceChildren();
    return;
  }
  const retry = h('button', { type: 'button', class: 'button primary', dataset: { action: 'retry' }, onclick: () => act('retry') }, 'Retry');
  const skip = h('button', { type: 'button', class: 'button danger', dataset: { action: 'skip' }, onclick: () => act('skip') }, 'Skip');
  where.replaceChildren(
    h('h2', {}, 'Parked: waiting for an operator'),
    h('p', {}, `The ${saga.step} step kept failing`, saga.last_error ? `: ${saga.last_error}` : '', '. ',
      'Retry tries it again; Skip gives it up (a compensation step counts as done, a forward step rejects the reservation).'),
    h('div', { class: 'ops-buttons' }, retry, skip));
}

/** The commands a step sent with the events each caused, from the correlation's events. */
function commandsOf(sagaId, step, correlated) {
  const sends = COMMANDS[step.step] || [];
  const items = [];
  for (const send of sends) {
    const caused = correlated && send.key
      ? correlated.filter((e) => e.command_id === `saga:${sagaId}:${send.key}`)
      : [];
    if (send.optional && caused.length === 0) continue;
    items.push(h('li', {},
      h('span', { class: 'ops-command' }, `${send.to}.${send.command}`),
      caused.length
        ? h('span', { class: 'ops-caused' }, '→ ', ...caused.flatMap((e, i) => [i ? ', ' : '',
          streamLink(e.aggregate_type, e.aggregate_id, e.event_type), h('span', { class: 'ops-pos' }, ` @${e.position}`)]))
        : ''));
  }
  if (step.step === 'start') items.push(h('li', {}, h('span', { class: 'muted' }, 'reads the Reservation')));
  return h('ul', { class: 'ops-commands' }, ...items);
}

function showSteps(where, saga, correlated) {
  const steps = stepsOf(saga.timeline);
  const deadlines = deadlinesOf(saga.timeline);
  const times = saga.timeline.map((e) => Date.parse(e.at));
  for (const s of steps) {
    times.push(Date.parse(s.begin));
    for (const f of s.failures) if (f.retry_at) times.push(Date.parse(f.retry_at));
  }
  // A deadline widens the axis only when it mattered: it fired, or the saga still waits on it.
  for (const d of deadlines) if (d.fired || saga.status === 'running') times.push(Date.parse(d.at));
  // A running saga's axis runs to now; a parked one's ends at its last event, so its steps keep their width.
  if (saga.status === 'running') times.push(Date.now());
  const from = Math.min(...times);
  const start = new Date(from).toISOString();
  const span = Math.max(1, Math.max(...times) - from);
  const x = (iso) => ((Date.parse(iso) - from) / span) * 1000;

  const bar = (step) => {
    const image = svg('svg', { class: 'ops-bar', viewBox: '0 0 1000 20', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    const begin = x(step.begin);
    const end = x(step.end || (step.parked && step.parked.at) || (saga.status === 'running' ? new Date().toISOString() : step.begin));
    const kind = step.parked && !step.outcome ? 'parked' : step.outcome ? (step.compensates ? 'undo' : 'done') : 'open';
    image.append(svg('rect', { class: `ops-bar-${kind}`, x: begin.toFixed(1), y: 4, width: Math.max(4, end - begin).toFixed(1), height: 12 }));
    for (const f of step.failures) image.append(svg('rect', { class: 'ops-bar-fail', x: x(f.at).toFixed(1), y: 1, width: 4, height: 18 }));
    for (const d of deadlines) {
      const at = x(d.at);
      if (at >= 0 && at <= 1000) image.append(svg('rect', { class: 'ops-bar-deadline', x: at.toFixed(1), y: 0, width: 3, height: 20 }));
    }
    return image;
  };

  const rows = steps.map((step) => {
    const attempts = step.failures.length + (step.outcome && step.outcome.kind !== 'skipped' ? 1 : 0);
    const failures = step.failures.length
      ? h('details', { class: 'ops-failures' },
        h('summary', {}, `${step.failures.length} failed`),
        h('ol', {}, ...step.failures.map((f) => h('li', {},
          `attempt ${f.attempt} at `, when(f.at), `: ${f.error}`,
          ...(f.retry_at ? [' — next try ', when(f.retry_at)] : [' — no retry']),
          h('span', { class: 'ops-pos' }, ` @${f.position}`)))))
      : '';
    let state;
    if (step.outcome) state = outcomeText(step.outcome);
    else if (step.parked) state = h('strong', { class: 'ops-error' }, 'parked (its error is above)');
    else if (saga.status === 'completed' || saga.status === 'compensated') state = h('em', {}, 'never finished');
    else state = h('em', {}, 'under way');
    const began = h('span', { class: 'ops-when', title: step.begin }, `+${duration(between(start, step.begin))}`);
    const took = h('span', { class: 'ops-when muted' }, step.end ? `took ${duration(between(step.begin, step.end))}` : 'not done');
    return h('tr', { class: step.compensates ? 'ops-undo' : null, dataset: { step: step.step } },
      h('th', { scope: 'row', 'data-label': 'Step' }, step.step, step.compensates ? h('small', {}, ' (undo)') : ''),
      h('td', { 'data-label': 'Commands → events', class: 'ops-wide' }, commandsOf(saga.saga_id, step, correlated)),
      h('td', { 'data-label': 'Attempts', class: 'num' }, String(attempts), failures),
      h('td', { 'data-label': 'Outcome', class: 'ops-wide' }, state),
      h('td', { 'data-label': 'When' }, began, h('br', {}), took),
      h('td', { 'data-label': 'Positions', class: 'ops-pos' }, step.positions.join(', ')),
      h('td', { 'data-label': 'On the time axis', class: 'ops-bar-cell ops-wide' }, bar(step)));
  });

  const deadlineNotes = deadlines.map((d) => h('li', {},
    `${d.deadline} deadline `, when(d.at), ` (set `, when(d.setAt), ') — ',
    d.fired ? h('strong', { class: 'ops-error' }, 'fired ', when(d.fired)) : 'did not fire'));

  where.replaceChildren(
    h('h2', { id: 'ops-steps-title' }, 'Steps'),
    correlated ? '' : h('p', { class: 'muted' }, 'The events the commands caused are not shown: the correlations model has not answered yet.'),
    h('div', { class: 'table-wrap ops-stack' },
      h('table', { class: 'ops-table ops-steps' },
        h('caption', {}, 'Each step with the commands it sent and the events they caused, its attempts, and when it began (after the saga\'s first event) and how long it took; the bar places it on the saga\'s time axis (red: a failed attempt; dark line: a deadline).'),
        h('thead', {}, h('tr', {}, ...['Step', 'Commands → events', 'Attempts', 'Outcome', 'When', 'Positions', 'On the time axis']
          .map((name) => h('th', { scope: 'col' }, name)))),
        h('tbody', {}, ...rows))),
    deadlineNotes.length ? h('div', {}, h('h3', {}, 'Deadlines'), h('ul', { class: 'ops-deadlines' }, ...deadlineNotes)) : '');
}

/** The saga's earliest time: its first event, or a step that began before that event was recorded. */
function originOf(saga) {
  const times = saga.timeline.map((e) => Date.parse(e.at));
  for (const e of saga.timeline) if (e.detail && e.detail.started_at) times.push(Date.parse(e.detail.started_at));
  return new Date(Math.min(...times)).toISOString();
}

function showHistory(where, saga) {
  const origin = saga.timeline.length ? originOf(saga) : null;
  const items = saga.timeline.map((entry) => h('li', { class: `ops-ev ops-ev-${entry.event_type}` },
    h('div', { class: 'ops-ev-head' },
      h('span', { class: 'ops-seq' }, `#${entry.sequence}`),
      h('span', { class: 'ops-ev-type' }, entry.event_type),
      when(entry.at),
      origin ? h('span', { class: 'ops-offset' }, ` +${duration(between(origin, entry.at))}`) : '',
      h('span', { class: 'ops-pos' }, ` position ${entry.position}`)),
    h('p', {}, sentence(entry)),
    jsonDetails('Event detail', entry.detail)));
  where.replaceChildren(h('h2', { id: 'ops-history-title' }, 'Event history'), h('ol', { class: 'ops-history' }, ...items));
}
