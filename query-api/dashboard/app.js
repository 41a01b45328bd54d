// The dashboard's shell: a hash router that loads one screen module per route, the header with
// the navigation and the session, and sign-in through a `#token=JWT` fragment (what
// `stay token --url` prints; a fragment never reaches a server or its logs).
//
// A screen module exports `render(view, params, ctx)`: `view` is a fresh `<main>` to fill,
// `params` the route's named parts plus `query` (the URLSearchParams after `?` in the hash),
// `ctx` = `{session, navigate(hash), signal}` (`signal` aborts when the screen is left). It may
// return a cleanup function, called when the user leaves the screen.

import { session, sessionExpired, signIn, signOut, Problem } from './api.js';
import { h, replace, problemBox, pageHeader } from './ui.js';

/** The routes: a pattern of the hash's path, the module to load, and who may open it. */
const ROUTES = [
  { pattern: '/', load: () => import('./rooms.js'), nav: 'rooms' },
  { pattern: '/rooms/:id', load: () => import('./room.js'), nav: 'rooms' },
  { pattern: '/signin', load: () => import('./signin.js'), nav: 'signin' },
  { pattern: '/me', load: () => import('./me.js'), nav: 'me', signedIn: true },
  { pattern: '/ops/sagas', load: () => import('./ops-sagas.js'), nav: 'sagas', admin: true },
  { pattern: '/ops/sagas/:id', load: () => import('./ops-sagas.js'), nav: 'sagas', admin: true, exportName: 'renderSaga' },
  { pattern: '/ops/projections', load: () => import('./ops-projections.js'), nav: 'projections', admin: true },
  { pattern: '/ops/projections/:name/dead-letters', load: () => import('./ops-dead-letters.js'), nav: 'projections', admin: true },
  { pattern: '/ops/events', load: () => import('./ops-events.js'), nav: 'events', admin: true },
  { pattern: '/ops/events/:type/:id', load: () => import('./ops-events.js'), nav: 'events', admin: true, exportName: 'renderStream' },
  { pattern: '/ops/correlations/:id', load: () => import('./ops-events.js'), nav: 'events', admin: true, exportName: 'renderCorrelation' },
];

/** The route matching `path`, with its named parts, or null. */
function match(path) {
  const parts = path.split('/').filter(Boolean);
  for (const route of ROUTES) {
    const want = route.pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    let ok = true;
    for (let i = 0; i < want.length; i += 1) {
      if (want[i].startsWith(':')) {
        try {
          params[want[i].slice(1)] = decodeURIComponent(parts[i]);
        } catch {
          ok = false;
        }
      } else if (want[i] !== parts[i]) ok = false;
      if (!ok) break;
    }
    if (ok) return { route, params };
  }
  return null;
}

/** The hash split into its path and query: `#/ops/sagas?status=parked` → `/ops/sagas`, `status=parked`. */
function parseHash(hash) {
  const text = (hash || '').replace(/^#/, '') || '/';
  const q = text.indexOf('?');
  const path = q === -1 ? text : text.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : text.slice(q + 1));
  return { path: path.startsWith('/') ? path : `/${path}`, query };
}

/** Go to `hash` (for example `#/rooms/ID`). */
export function navigate(hash) {
  const target = hash.startsWith('#') ? hash : `#${hash}`;
  if (location.hash === target) route();
  else location.hash = target;
}

let current = null; // {cleanup, controller}
let generation = 0;

function leaveScreen() {
  if (!current) return;
  current.controller.abort();
  if (typeof current.cleanup === 'function') {
    try {
      current.cleanup();
    } catch (err) {
      console.warn('a screen failed to clean up', err);
    }
  }
  current = null;
}

/** A fresh `<main>` in place of the old one, so a screen still loading writes into a detached element. */
function freshView() {
  const old = document.getElementById('view');
  const view = h('main', { id: 'view', tabindex: '-1' });
  old.replaceWith(view);
  return view;
}

function deniedView(view, route, s) {
  const why = route.admin
    ? s
      ? `This screen is for operators. You are signed in as “${s.sub}” with the role ${s.role}.`
      : 'This screen is for operators: sign in with an admin token.'
    : 'This screen shows what belongs to you: sign in first.';
  replace(
    view,
    pageHeader(route.admin ? 'Operators only' : 'Sign in to continue'),
    h(
      'div',
      { class: 'notice', role: 'note' },
      h('p', null, why),
      sessionExpired() && h('p', null, 'Your last token has expired.'),
      h('p', null, h('a', { class: 'button primary', href: '#/signin' }, 'Sign in'), ' ', h('a', { class: 'button', href: '#/' }, 'Back to the rooms')),
    ),
  );
}

/** Show the screen of the current hash. */
async function route() {
  const hash = location.hash || '#/';
  if (hash.startsWith('#token=')) {
    takeTokenFromFragment(hash);
    return;
  }
  const { path, query } = parseHash(hash);
  leaveScreen();
  generation += 1;
  const mine = generation;
  const view = freshView();
  const found = match(path);
  const s = session();
  renderHeader(found ? found.route.nav : null);
  const controller = new AbortController();
  current = { controller, cleanup: null };
  if (!found) {
    replace(
      view,
      pageHeader('Nothing here'),
      problemBox(new Problem({ status: 404, code: 'screen_not_found', title: 'There is no such screen', detail: `The dashboard has no screen at ${path}.` })),
      h('p', null, h('a', { href: '#/' }, 'Go to the rooms')),
    );
    focusHeading(view);
    return;
  }
  const { route: r, params } = found;
  if ((r.admin && (!s || s.role !== 'admin')) || (r.signedIn && !s)) {
    deniedView(view, r, s);
    focusHeading(view);
    return;
  }
  const ctx = { session: s, navigate, signal: controller.signal };
  try {
    const module = await r.load();
    if (mine !== generation) return;
    const render = module[r.exportName || 'render'] || module.render;
    if (typeof render !== 'function') throw new Error(`the screen module for ${r.pattern} has no render function`);
    const cleanup = await render(view, { ...params, query }, ctx);
    if (mine !== generation) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    current.cleanup = cleanup;
  } catch (err) {
    if (mine !== generation) return;
    const problem = err instanceof Problem ? err : new Problem({ code: 'screen_failed', title: 'This screen could not be shown', detail: String(err && err.message ? err.message : err) });
    if (!view.querySelector('.page-header')) view.appendChild(pageHeader('Something went wrong'));
    view.appendChild(problemBox(problem));
  }
  if (mine === generation) focusHeading(view);
}

/** The tab's title follows the screen's heading, so a row of tabs says which is which. */
function titleFrom(view) {
  const heading = view.querySelector('h1');
  const text = heading ? heading.textContent.trim() : '';
  document.title = text ? `${text} · Stay` : 'Stay — dashboard';
}

/** After a navigation, focus the new screen's heading (keyboard and screen-reader users start there). */
let firstRoute = true;
function focusHeading(view) {
  titleFrom(view);
  if (firstRoute) {
    firstRoute = false;
    return;
  }
  const heading = view.querySelector('h1');
  (heading || view).focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

/** `#token=JWT`: keep the token, then drop it from the address bar and history. */
function takeTokenFromFragment(hash) {
  const token = decodeURIComponent(hash.slice('#token='.length).split('&')[0]);
  let problem = null;
  try {
    signIn(token);
  } catch (err) {
    problem = err;
  }
  history.replaceState(null, '', problem ? '#/signin' : '#/me');
  if (problem) pendingProblem = problem;
  route();
}

/** A problem from signing in by link, shown by the sign-in screen. */
let pendingProblem = null;

/** The problem of the last `#token=` link, once. */
export function takePendingProblem() {
  const p = pendingProblem;
  pendingProblem = null;
  return p;
}

function navLink(href, label, key, active) {
  return h('li', null, h('a', { href, 'aria-current': key === active ? 'page' : false }, label));
}

let activeNav = null;

function renderHeader(active) {
  activeNav = active;
  const s = session();
  const links = [navLink('#/', 'Rooms', 'rooms', active)];
  if (s) links.push(navLink('#/me', s.role === 'host' ? 'My rooms' : s.role === 'guest' ? 'My stays' : 'Me', 'me', active));
  if (s && s.role === 'admin') {
    links.push(navLink('#/ops/sagas', 'Sagas', 'sagas', active));
    links.push(navLink('#/ops/projections', 'Projections', 'projections', active));
    links.push(navLink('#/ops/events', 'Events', 'events', active));
  }
  const who = s
    ? h(
        'div',
        { class: 'who' },
        h('span', { class: 'who-name', title: `Signed in as ${s.sub} (${s.role})` }, h('span', { class: `role role-${s.role}` }, s.role), ' ', s.sub),
        h('button', { type: 'button', class: 'button small', onclick: () => { signOut(); navigate('#/'); } }, 'Sign out'),
      )
    : h('div', { class: 'who' }, h('a', { class: 'button small', href: '#/signin', 'aria-current': active === 'signin' ? 'page' : false }, 'Sign in'));
  replace(
    document.getElementById('site-header'),
    h('a', { class: 'brand', href: '#/' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Stay'),
    h('nav', { 'aria-label': 'Main' }, h('ul', null, links)),
    who,
  );
}

// The skip link must not change the hash (that would be a route): it moves focus instead.
document.querySelector('.skip-link')?.addEventListener('click', (event) => {
  event.preventDefault();
  document.getElementById('view').focus();
});
window.addEventListener('hashchange', route);
window.addEventListener('stay:session', () => renderHeader(activeNav));
route();
