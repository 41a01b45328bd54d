// The dashboard's one way to talk to Stay's API: the session (a token kept in sessionStorage),
// JSON reads and writes that turn every failure into a Problem, and live streams of
// server-sent events read with fetch, so the token travels in a header and never in a URL.

const TOKEN_KEY = 'stay.token';

/** A failed request, shaped like the API's problem documents (RFC 9457). */
export class Problem extends Error {
  constructor({ status = 0, code = 'unexpected', title = 'Something went wrong', detail = '', errors = [] } = {}) {
    super(detail ? `${title}: ${detail}` : title);
    this.name = 'Problem';
    this.status = status;
    this.code = code;
    this.title = title;
    this.detail = detail;
    this.errors = Array.isArray(errors) ? errors : [];
  }

  /** Any thrown value as a Problem (a Problem stays as it is). */
  static from(err) {
    if (err instanceof Problem) return err;
    if (err && err.name === 'AbortError') {
      return new Problem({ code: 'aborted', title: 'The request was cancelled' });
    }
    return new Problem({
      code: 'network_error',
      title: 'The server could not be reached',
      detail: err && err.message ? err.message : String(err),
    });
  }
}

/** The payload of a JWT, or null when it is not one. Nothing is verified: the server does that. */
function decodePayload(token) {
  const parts = String(token).trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === 'object' ? payload : null;
  } catch {
    return null;
  }
}

/** What a token says about its holder: `{token, sub, role, exp}`, or null when it cannot be read. */
export function describeToken(token) {
  const payload = decodePayload(token);
  if (!payload || typeof payload.sub !== 'string' || typeof payload.role !== 'string') return null;
  const exp = typeof payload.exp === 'number' ? payload.exp : null;
  return { token: String(token).trim(), sub: payload.sub, role: payload.role, exp };
}

/** The signed-in user, `{token, sub, role, exp}`, or null (none, unreadable, or expired). */
export function session() {
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
  if (!token) return null;
  const described = describeToken(token);
  if (!described) return null;
  if (described.exp !== null && described.exp * 1000 <= Date.now()) return null;
  return described;
}

/** Whether a token is stored but has expired (so the screens can say so rather than just "sign in"). */
export function sessionExpired() {
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const described = token && describeToken(token);
    return Boolean(described && described.exp !== null && described.exp * 1000 <= Date.now());
  } catch {
    return false;
  }
}

/** Keep `token` for this tab. Throws a Problem when it is not a readable, unexpired JWT. */
export function signIn(token) {
  const described = describeToken(token);
  if (!described) {
    throw new Problem({
      status: 0,
      code: 'token_unreadable',
      title: 'This is not a token Stay can read',
      detail: 'Paste the whole token that `stay token` printed (three parts separated by dots).',
    });
  }
  if (described.exp !== null && described.exp * 1000 <= Date.now()) {
    throw new Problem({
      status: 0,
      code: 'token_expired',
      title: 'This token has expired',
      detail: 'Ask `stay token` for a new one.',
    });
  }
  sessionStorage.setItem(TOKEN_KEY, described.token);
  window.dispatchEvent(new CustomEvent('stay:session'));
  return described;
}

/** Forget the token of this tab. */
export function signOut() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } finally {
    window.dispatchEvent(new CustomEvent('stay:session'));
  }
}

function headers(extra = {}) {
  const out = { Accept: 'application/json', ...extra };
  const s = session();
  if (s) out.Authorization = `Bearer ${s.token}`;
  return out;
}

/** The answer's body as a Problem (problem+json when the server sent one). */
async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body === 'object' && (body.code || body.title)) {
    return new Problem({
      status: body.status || response.status,
      code: body.code || `http_${response.status}`,
      title: body.title || response.statusText || `HTTP ${response.status}`,
      detail: body.detail || '',
      errors: body.errors,
    });
  }
  return new Problem({
    status: response.status,
    code: `http_${response.status}`,
    title: response.statusText || `The server answered ${response.status}`,
    detail: `${response.url} answered ${response.status} without a problem document.`,
  });
}

async function request(method, path, { body, signal, headers: extra } = {}) {
  let response;
  try {
    const init = { method, headers: headers(extra), signal };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    response = await fetch(path, init);
  } catch (err) {
    throw Problem.from(err);
  }
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  try {
    return await response.json();
  } catch (err) {
    throw new Problem({
      status: response.status,
      code: 'unreadable_answer',
      title: 'The server answered something that is not JSON',
      detail: String(err && err.message ? err.message : err),
    });
  }
}

/** GET `path` as JSON. Options: `{signal}`. */
export function getJson(path, options = {}) {
  return request('GET', path, options);
}

/** POST `body` as JSON to `path`. Options: `{signal, headers}` (for example an Idempotency-Key). */
export function postJson(path, body, options = {}) {
  return request('POST', path, { ...options, body: body === undefined ? {} : body });
}

/** `path` with `params` (an object; null and undefined left out) as its query string. */
export function withQuery(path, params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === '') continue;
    search.set(key, String(value));
  }
  const text = search.toString();
  if (!text) return path;
  return path + (path.includes('?') ? '&' : '?') + text;
}

/** Every item of a paged list (`{items, next_cursor}`), at most `max`. */
export async function getAll(path, { max = 5000, limit = 500, signal } = {}) {
  const items = [];
  let cursor = null;
  for (;;) {
    const page = await getJson(withQuery(path, { limit, cursor }), { signal });
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor || items.length >= max || !(page.items || []).length) break;
  }
  return items;
}

/** Split SSE text into events; returns the events and the unfinished rest. */
function parseEvents(buffer) {
  const events = [];
  const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, event: 'message', data: [] };
    let seen = false;
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') event.id = value;
      else if (field === 'event') event.event = value;
      else if (field === 'data') event.data.push(value);
      else continue;
      seen = true;
    }
    if (seen) events.push(event);
  }
  return { events, rest };
}

/**
 * Follow the server-sent events of `path`, calling `onEvent({id, event, data})` with `data` parsed
 * as JSON (or the raw text when it is not JSON). Reconnects with `Last-Event-ID` after a dropped
 * connection, waiting longer each time (0.5 s doubling to 15 s; reset once connected). Stops when
 * `signal` aborts, or for good on 401/403/404 (retrying cannot help; `onStatus` is told).
 *
 * Options: `{signal, onStatus(state, problem?)}` with state `connecting`, `open`, `retrying`
 * (problem: why) or `stopped` (problem: why). Resolves when it stops.
 */
export async function live(path, onEvent, { signal, onStatus = () => {} } = {}) {
  let lastEventId = null;
  let delay = 500;
  const sleep = (ms) =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  while (!(signal && signal.aborted)) {
    onStatus('connecting');
    let problem = null;
    try {
      const extra = { Accept: 'text/event-stream' };
      if (lastEventId !== null) extra['Last-Event-ID'] = lastEventId;
      const response = await fetch(path, { headers: headers(extra), signal, cache: 'no-store' });
      if (!response.ok) {
        problem = await problemOf(response);
        if ([401, 403, 404].includes(response.status)) {
          onStatus('stopped', problem);
          return;
        }
      } else {
        onStatus('open');
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const { events, rest } = parseEvents(buffer);
          buffer = rest;
          for (const raw of events) {
            if (raw.id !== null) lastEventId = raw.id;
            const text = raw.data.join('\n');
            let data = text;
            try {
              data = JSON.parse(text);
            } catch {
              data = text;
            }
            try {
              onEvent({ id: raw.id, event: raw.event, data });
            } catch (err) {
              // A screen's handler failing must not end the stream; say it once, quietly.
              console.warn('a live event handler failed', err);
            }
          }
        }
        problem = new Problem({ code: 'stream_ended', title: 'The live stream ended' });
      }
    } catch (err) {
      if (signal && signal.aborted) break;
      problem = Problem.from(err);
    }
    if (signal && signal.aborted) break;
    onStatus('retrying', problem);
    await sleep(delay);
    delay = Math.min(delay * 2, 15000);
  }
  onStatus('stopped', null);
}
