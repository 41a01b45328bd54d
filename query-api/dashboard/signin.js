// `#/signin` — paste a token (or arrive by the link `stay token --url` prints). The token is
// kept in this tab's sessionStorage only, checked once against the server, and sent in the
// Authorization header from then on; it never goes into a URL the server sees.

import { session, signIn, signOut, describeToken, getJson, Problem } from './api.js';
import { h, replace, pageHeader, problemBox, time } from './ui.js';
import { takePendingProblem } from './app.js';

export async function render(view, params, ctx) {
  const current = session();
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  const input = h('textarea', {
    id: 'token',
    name: 'token',
    rows: '5',
    required: true,
    spellcheck: 'false',
    autocomplete: 'off',
    'aria-describedby': 'token-hint',
    placeholder: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi…',
  });
  const submit = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'signin-form panel', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'Access token'), input, h('span', { class: 'hint', id: 'token-hint' }, 'A JWT from ', h('code', null, 'stay token'), '. It stays in this browser tab and is forgotten when the tab closes.')),
    h('div', null, submit),
    status,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    replace(status);
    if (!token) {
      status.appendChild(problemBox(new Problem({ code: 'token_missing', title: 'Paste a token first', detail: 'The field is empty.' })));
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const who = signIn(token);
      // One cheap authenticated read tells whether the server accepts the token.
      await getJson('/v1/me/notifications?limit=1', { signal: ctx.signal });
      if (ctx.signal.aborted) return;
      status.appendChild(h('p', null, `Signed in as ${who.sub} (${who.role}).`));
      ctx.navigate('#/me');
    } catch (err) {
      const p = Problem.from(err);
      if (p.status === 401 || p.code.startsWith('token_')) signOut();
      if (ctx.signal.aborted) return;
      status.appendChild(problemBox(p.status === 401 ? new Problem({ ...p, title: 'The server refused this token', detail: p.detail || 'It may be signed with another secret, or have expired.' }) : p));
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });

  const pending = takePendingProblem();
  replace(
    view,
    pageHeader('Sign in', h('p', { class: 'subtitle' }, 'Guests see their reservations and notifications, hosts their rooms and bookings, admins the operator screens.')),
    pending ? problemBox(pending) : null,
    current
      ? h(
          'div',
          { class: 'notice', role: 'note' },
          h('p', null, 'You are signed in as ', h('code', null, current.sub), ' with the role ', h('strong', null, current.role), current.exp ? `, until ${time(new Date(current.exp * 1000).toISOString())}` : '', '.'),
          h('p', null, h('a', { class: 'button primary', href: '#/me' }, 'Go to my page'), ' ', h('button', { type: 'button', class: 'button', onclick: () => { signOut(); ctx.navigate('#/signin'); } }, 'Sign out')),
        )
      : null,
    h('div', { class: 'two-cols' },
      form,
      h(
        'section',
        { class: 'panel', 'aria-labelledby': 'how-title' },
        h('h2', { id: 'how-title' }, 'Getting a token'),
        h(
          'ol',
          { class: 'steps' },
          h('li', null, 'On the machine running Stay, ask for a link:', h('pre', { class: 'cmd' }, 'stay token --sub alice --role guest --url')),
          h('li', null, 'Open the link it prints. The token travels in the part after #, which browsers never send to a server, and this page keeps it.'),
          h('li', null, 'Or leave out --url and paste the token here.'),
        ),
        h('p', { class: 'muted' }, 'Roles: guest, host or admin. Use the same --data-dir (or STAY_JWT_SECRET) as the server so it accepts the token.'),
      ),
    ),
  );
  if (!current) input.focus({ preventScroll: true });
  // A token pasted into the field is checked as it is typed, so a wrong paste shows at once.
  input.addEventListener('input', () => {
    const text = input.value.trim();
    replace(status);
    if (!text) return;
    const who = describeToken(text);
    status.appendChild(who ? h('p', { class: 'muted' }, `A token for ${who.sub} (${who.role})${who.exp ? `, valid until ${time(new Date(who.exp * 1000).toISOString())}` : ''}.`) : h('p', { class: 'muted' }, 'This does not look like a token yet.'));
  });
}
