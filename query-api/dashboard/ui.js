// Small pieces every screen shares: building elements, showing problems, formatting money and
// times, asking for confirmation, status badges. No framework: plain DOM.

/**
 * An element: `h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child, [more])`.
 * Attributes: `class`, `style` (an object, set through the CSSOM so the strict CSP allows it),
 * `dataset` (an object), `on<event>` (a listener), booleans (true sets, false leaves out), anything
 * else as an attribute. Children: nodes, strings, numbers, arrays of them; null/false/undefined skipped.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class' || key === 'className') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
    else if (key === 'style' && typeof value === 'object') Object.assign(el.style, value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === 'value' && 'value' in el) el.value = value;
    else if (key === 'checked' || key === 'selected') el[key] = Boolean(value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Empty `el` and fill it with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A screen's heading, focusable so the router can move focus to it after a navigation. */
export function pageHeader(title, ...extra) {
  return h('header', { class: 'page-header' }, h('h1', { tabindex: '-1' }, title), ...extra);
}

/** A "loading" placeholder that screen readers announce. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** A quiet message for an empty list. */
export function empty(text, ...more) {
  return h('p', { class: 'empty' }, text, ...more);
}

/** The problem as an alert box (title, detail, code, and each field error). */
export function problemBox(problem) {
  const p = problem || {};
  const title = p.title || 'Something went wrong';
  const detail = p.detail || (p.title ? '' : p.message || String(problem));
  const errors = Array.isArray(p.errors) ? p.errors : [];
  return h(
    'div',
    { class: 'problem', role: 'alert', dataset: { code: p.code || 'unexpected' } },
    h('p', { class: 'problem-title' }, title),
    detail && h('p', { class: 'problem-detail' }, detail),
    errors.length > 0 &&
      h('ul', { class: 'problem-errors' }, errors.map((e) => h('li', null, h('code', null, e.field || '?'), ': ', e.detail || ''))),
    h(
      'p',
      { class: 'problem-meta' },
      p.status ? `HTTP ${p.status} · ` : '',
      h('code', null, p.code || 'unexpected'),
      hint(p),
    ),
  );
}

/** What a person can do about a problem, when there is something obvious. */
function hint(p) {
  if (p.status === 401) return [' · ', h('a', { href: '#/signin' }, 'Sign in again')];
  if (p.status === 403) return ' · your token’s role may not see this';
  if (p.code === 'network_error') return ' · is `stay serve` running?';
  return null;
}

/** Show `problem` in `view`: replaces its content but keeps a heading when there is one. */
export function showProblem(view, problem) {
  const heading = view.querySelector(':scope > .page-header');
  view.replaceChildren();
  if (heading) view.appendChild(heading);
  view.appendChild(problemBox(problem));
  return view;
}

const moneyFormats = new Map();

function moneyFormat(currency) {
  if (!moneyFormats.has(currency)) {
    let format;
    try {
      format = new Intl.NumberFormat(undefined, { style: 'currency', currency });
    } catch {
      format = null;
    }
    moneyFormats.set(currency, format);
  }
  return moneyFormats.get(currency);
}

/** `{amount_minor, currency}` as people write it (12000 USD → "$120.00"); "—" for none. */
export function money(m) {
  if (!m || typeof m.amount_minor !== 'number' || !m.currency) return '—';
  const format = moneyFormat(m.currency);
  if (!format) return `${m.amount_minor} ${m.currency} (minor units)`;
  const digits = format.resolvedOptions().maximumFractionDigits;
  return format.format(m.amount_minor / 10 ** digits);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });

/** An RFC 3339 time as a local date and time; the text itself when it is not one. */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : timeFormat.format(d);
}

/** A `YYYY-MM-DD` date as people write it (the date itself, no time zone shift). */
export function date(ymd) {
  if (!ymd) return '—';
  const d = new Date(`${ymd}T00:00:00Z`);
  return Number.isNaN(d.getTime()) ? String(ymd) : dateFormat.format(d);
}

/** How long ago an RFC 3339 time was: "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(iso, now = Date.now()) {
  if (!iso) return '—';
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return String(iso);
  const s = Math.round((now - then) / 1000);
  if (s < -5) return `in ${duration(-s)}`;
  if (s < 5) return 'just now';
  return `${duration(s)} ago`;
}

function duration(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/**
 * A `<time>` showing how long ago `iso` was, with the exact time as its tooltip. The text is
 * kept fresh by `refreshTimes(root)`, which screens call on a timer.
 */
export function agoEl(iso) {
  return h('time', { datetime: iso || '', title: time(iso), class: 'ago' }, ago(iso));
}

/** Refresh every `agoEl` under `root`. */
export function refreshTimes(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time.ago')) {
    const iso = el.getAttribute('datetime');
    if (iso) el.textContent = ago(iso, now);
  }
}

/**
 * Ask before doing something: a modal `<dialog>` with `text`, a confirm and a cancel button.
 * Resolves true only when confirmed; Escape, Cancel or closing resolve false. Options:
 * `{confirmLabel, cancelLabel, danger, detail}`. The buttons carry `data-confirm="yes"`/`"no"`.
 */
export function confirmAction(text, { confirmLabel = 'Confirm', cancelLabel = 'Cancel', danger = false, detail = '' } = {}) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const yes = h('button', { type: 'submit', value: 'yes', class: danger ? 'button danger' : 'button primary', dataset: { confirm: 'yes' } }, confirmLabel);
    const no = h('button', { type: 'submit', value: 'no', class: 'button', dataset: { confirm: 'no' } }, cancelLabel);
    const dialog = h(
      'dialog',
      { class: 'confirm', 'aria-labelledby': 'confirm-title' },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { id: 'confirm-title' }, text),
        detail && h('p', { class: 'muted' }, detail),
        h('div', { class: 'actions' }, no, yes),
      ),
    );
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'yes';
      dialog.remove();
      if (opener && typeof opener.focus === 'function' && document.contains(opener)) opener.focus();
      resolve(ok);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    yes.focus();
  });
}

const STATUS_TONES = {
  // reservations
  pending: 'wait', cancelling: 'wait', confirmed: 'good', rejected: 'bad', cancelled: 'muted',
  // payments
  none: 'muted', approved: 'good', declined: 'bad', failed: 'bad', refunded: 'info',
  // sagas
  running: 'wait', completed: 'good', compensated: 'info', parked: 'bad',
  // projections and dead letters
  catching_up: 'wait', rebuilding: 'info', retrying: 'wait', held: 'muted', applied: 'good', skipped: 'muted',
  // rooms
  listed: 'good', delisted: 'muted',
};

/** A small coloured label for a status word (pending, confirmed, parked, …). */
export function statusBadge(status) {
  const word = status === null || status === undefined || status === '' ? 'unknown' : String(status);
  const tone = STATUS_TONES[word] || 'muted';
  return h('span', { class: `badge tone-${tone}`, dataset: { status: word } }, word.replace(/_/g, ' '));
}

/** A short form of a long id (its first 8 characters), the whole id as its tooltip. */
export function shortId(id) {
  const text = String(id || '');
  return h('code', { class: 'id', title: text }, text.length > 12 ? `${text.slice(0, 8)}…` : text);
}

/** A live-connection indicator; call its `set(state, problem)` from `live`'s `onStatus`. */
export function liveIndicator() {
  const label = h('span', { class: 'live-label' }, 'Connecting…');
  const el = h('span', { class: 'live state-connecting', role: 'status', title: 'Live updates' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), label);
  el.set = (state, problem) => {
    el.className = `live state-${state}`;
    el.dataset.state = state;
    const words = { connecting: 'Connecting…', open: 'Live', retrying: 'Reconnecting…', stopped: 'Not live' };
    label.textContent = words[state] || state;
    el.title = problem ? `${problem.title}${problem.detail ? ` — ${problem.detail}` : ''}` : 'Live updates';
  };
  return el;
}

/** Mark `el` as just changed: a short highlight (restarted when it changes again). */
export function flash(el) {
  if (!el) return;
  el.classList.remove('flash');
  // Reading layout restarts the animation.
  void el.offsetWidth;
  el.classList.add('flash');
  el.addEventListener('animationend', () => el.classList.remove('flash'), { once: true });
}

/** Call `fn` at most once per `ms`, with the latest arguments, after the calls stop coming. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}
