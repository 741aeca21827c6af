// The dashboard's shell: log in, route by the URL's hash, poll the current page.
import { claims, logIn, signOut, token, whenSignedOut } from './api.js';
import { h } from './dom.js';
import * as assetPage from './page-asset.js';
import * as assetsPage from './page-assets.js';
import * as eventsPage from './page-events.js';
import * as importsPage from './page-imports.js';
import * as nodesPage from './page-nodes.js';
import * as overviewPage from './page-overview.js';
import * as rentalsPage from './page-rentals.js';

/** How often the page on screen asks the API again. */
const POLL_MS = 5000;

const pages = {
  overview: overviewPage,
  nodes: nodesPage,
  assets: assetsPage,
  asset: assetPage,
  rentals: rentalsPage,
  imports: importsPage,
  events: eventsPage,
};

const pageRoot = document.getElementById('page');
let current = null;
let timer = null;

function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, ...rest] = path.split('/');
  return { name: name || 'overview', arg: rest.length ? decodeURIComponent(rest.join('/')) : undefined, params: new URLSearchParams(search) };
}

function showSignedIn(user) {
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('who').hidden = false;
  document.getElementById('who-name').textContent = `${user.username}${user.admin ? ' (admin)' : ''}`;
  for (const item of document.querySelectorAll('[data-admin]')) item.hidden = !user.admin;
}

function showLogin() {
  stopPage();
  pageRoot.replaceChildren();
  document.getElementById('nav').hidden = true;
  document.getElementById('who').hidden = true;
  document.getElementById('login').hidden = false;
  document.getElementById('login-username').focus();
}

function stopPage() {
  clearTimeout(timer);
  timer = null;
  current = null;
}

async function poll(mounted) {
  if (current !== mounted) return;
  try {
    await mounted.refresh?.();
    mounted.error.textContent = '';
  } catch (error) {
    mounted.error.textContent = `Could not load: ${error.message}`;
  }
  if (current === mounted && mounted.refresh) timer = setTimeout(() => poll(mounted), POLL_MS);
}

function route() {
  const user = claims();
  if (!token() || !user) return showLogin();
  showSignedIn(user);
  const { name, arg, params } = parseHash();
  const page = pages[name] ?? overviewPage;
  stopPage();
  for (const link of document.querySelectorAll('#nav a')) {
    const target = link.getAttribute('href').slice(2);
    if (target === name || (name === 'asset' && target === 'assets')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const heading = h('h1', { tabindex: '-1' }, page.title);
  const error = h('p', { class: 'error', role: 'alert' });
  const body = h('div');
  pageRoot.replaceChildren(heading, error, body);
  document.title = `${page.title} · Dispatcher`;
  if (page.adminOnly && !user.admin) {
    body.append(h('p', {}, 'This page is for admins.'));
    return;
  }
  const mounted = { ...page.mount(body, { user, arg, params }), error };
  current = mounted;
  heading.focus();
  poll(mounted);
}

document.getElementById('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const message = document.getElementById('login-error');
  message.textContent = '';
  try {
    await logIn(form.username.value, form.password.value);
    form.reset();
    if (!location.hash || location.hash === '#/') location.hash = '#/overview';
    else route();
  } catch (error) {
    message.textContent = error.status === 401 ? 'Wrong username or password.' : `Could not log in: ${error.message}`;
  }
});
document.getElementById('logout').addEventListener('click', () => signOut());
whenSignedOut(() => showLogin());
window.addEventListener('hashchange', route);
route();
