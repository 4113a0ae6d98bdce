// The Sluice console. Plain DOM, no framework. Everything a client sent, subscribed to or a
// record holds is untrusted: it reaches the page only as text (textContent, text nodes,
// titles), never as markup. Records are watched with the client library, which the gateway
// serves next to this script.

import { Sluice } from '/client.js';

const TOKEN_KEY = 'sluice.adminToken';
const POLL_MS = 2000;
const PAGE = 1000;
// Beyond this many clients the table would be too slow to be useful; the API still has them all.
const MAX_CLIENTS = 5000;
const MAX_LOG = 500;
const RETRY_MS = 3000;
// A client's subscriptions shown in its row; the rest are counted, and all are in the title.
const SHOWN_SUBSCRIPTIONS = 3;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  info: null,
  signedIn: false,
  poll: null,
  refreshing: null,
  refreshAgain: false,
  refreshSoon: null,
  clients: [],
  rows: new Map(),
  events: { controller: null, wanted: false, retry: null, total: 0 },
  // `client` is the library's connection while a watch runs (it reconnects by itself).
  data: { client: null, count: 0 },
};

/** An element whose children are nodes or strings; strings always become text nodes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null) continue;
    if (name === 'class') node.className = value;
    else if (name === 'title') node.title = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// ---------------------------------------------------------------- the admin API

class ApiError extends Error {
  constructor(status, body) {
    super(body && typeof body.error === 'string' ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Calls the admin API; resolves to { status, data } or throws an ApiError. */
async function api(method, path, { text, json } = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (text !== undefined) {
    headers['Content-Type'] = 'text/plain; charset=utf-8';
    body = text;
  }
  const response = await fetch(path, { method, headers, body, cache: 'no-store' });
  const raw = await response.text();
  let data = null;
  if (raw) {
    try {
      data = JSON.parse(raw);
    } catch {
      data = { error: raw };
    }
  }
  if (response.status === 401 && state.signedIn) {
    signOut('The admin token was refused (401): it may have changed when the gateway restarted. Paste the current one.');
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { status: response.status, data };
}

function describe(error) {
  return error instanceof ApiError ? `${error.status}: ${error.message}` : `cannot reach the gateway (${error.message})`;
}

// ---------------------------------------------------------------- signing in and out

async function signIn(token) {
  state.token = token;
  $('login-error').textContent = '';
  let info;
  try {
    info = (await api('GET', '/api/info')).data;
  } catch (error) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const message = error instanceof ApiError && error.status === 401
      ? 'That admin token was refused. Use the ADMIN_TOKEN value, or the "generated admin token" Sluice printed at start-up.'
      : `Cannot open the console: ${describe(error)}`;
    showLogin(message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.info = info;
  state.signedIn = true;
  showGateway(info);
  $('login').hidden = true;
  $('console').hidden = false;
  $('forget').hidden = false;
  $('live').hidden = false;
  refreshClients();
  state.poll = setInterval(refreshClients, POLL_MS);
  startEvents();
}

function signOut(message) {
  state.signedIn = false;
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.poll);
  state.poll = null;
  stopEvents();
  stopData('stopped');
  for (const { tr } of state.rows.values()) tr.remove();
  state.rows.clear();
  $('gateway').replaceChildren();
  $('facts').replaceChildren();
  $('console').hidden = true;
  $('forget').hidden = true;
  $('live').hidden = true;
  showLogin(message);
}

function showLogin(message) {
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('login-token').value = '';
  $('login-token').focus();
}

function showGateway(info) {
  const ws = info.websocket;
  const source = info.source === 'embedded' ? 'embedded stream' : 'Kafka';
  $('gateway').replaceChildren(`v${info.version} · ${source} · subscriptions at `, el('code', {}, `${wsBase()}/{key}`));
  const tokens = info.tokens.secret === 'configured'
    ? ['SLUICE_JWT_SECRET: every replica with it', 'Tokens the console mints are signed with the configured secret.']
    : ['this process only', 'No SLUICE_JWT_SECRET is set: tokens are signed with a secret this process drew at start-up, '
      + 'so no other replica (nor this one after a restart) accepts them. Set SLUICE_JWT_SECRET to share them.'];
  const facts = [
    ['Version', info.version, null],
    ['Source', source, null],
    ['Node', info.node ?? '-', 'The replica serving this console. The client list covers every replica of a cluster; '
      + 'the events below are this replica\'s.'],
    ['Subscriptions', `${wsBase()}/{key}, /*, /`, '/{key} reads one key, /* every key; / takes selectors, '
      + 'and with the sluice.v1 subprotocol many subscriptions on one connection (the client library).'],
    ['Admin API', ws.sameOrigin ? 'on the same port' : `own listener, ${location.host}`, null],
    ['Client tokens', tokens[0], tokens[1]],
  ];
  $('facts').replaceChildren(
    ...facts.flatMap(([name, value, title]) => [el('dt', {}, name), el('dd', { title }, value)]),
  );
}

// ---------------------------------------------------------------- clients

async function refreshClients() {
  if (!state.signedIn) return;
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = (async () => {
    try {
      const all = [];
      let cursor = null;
      // A cluster whose Redis is away answers for this replica only, and says so.
      let partial = false;
      do {
        const query = new URLSearchParams({ limit: String(PAGE) });
        if (cursor) query.set('cursor', cursor);
        const { data } = await api('GET', `/api/clients?${query}`);
        all.push(...data.clients);
        partial ||= data.partial === true;
        cursor = data.next;
      } while (cursor && all.length < MAX_CLIENTS);
      if (!state.signedIn) return;
      state.clients = all;
      const note = cursor ? `showing the first ${all.length}` : `updated ${clock(new Date())}`;
      $('clients-note').textContent = partial ? `${note} · partial: some replicas could not be asked` : note;
      renderClients();
      setLive(true, 'live');
    } catch (error) {
      if (state.signedIn) setLive(false, describe(error));
    }
  })();
  await state.refreshing;
  state.refreshing = null;
  if (state.refreshAgain) {
    state.refreshAgain = false;
    refreshClients();
  }
}

/** A refresh shortly after a connect or disconnect, however many arrive together. */
function refreshSoon() {
  if (state.refreshSoon) return;
  state.refreshSoon = setTimeout(() => {
    state.refreshSoon = null;
    refreshClients();
  }, 250);
}

function setLive(ok, text) {
  const pill = $('live');
  pill.className = `pill ${ok ? 'live' : 'down'}`;
  pill.textContent = ok ? '● live' : '● offline';
  pill.title = text;
}

function matchesFilter(client, filter) {
  if (!filter) return true;
  const hay = [client.replyId, client.key, client.user, client.remoteAddr, client.node, client.userAgent];
  for (const s of client.subscriptions ?? []) hay.push(s.id, subscriptionText(s));
  return hay.some((v) => typeof v === 'string' && v.toLowerCase().includes(filter));
}

function renderClients() {
  const filter = $('client-filter').value.trim().toLowerCase();
  const shown = state.clients.filter((c) => matchesFilter(c, filter));
  const tbody = $('clients').tBodies[0];
  const seen = new Set();
  let previous = null;
  for (const client of shown) {
    seen.add(client.replyId);
    let row = state.rows.get(client.replyId);
    if (!row) {
      row = clientRow(client.replyId);
      state.rows.set(client.replyId, row);
    }
    updateRow(row, client);
    // Keep the API's order (by id) without moving rows that are already in place.
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== row.tr) tbody.insertBefore(row.tr, wanted);
    previous = row.tr;
  }
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      state.rows.delete(id);
    }
  }
  $('client-count').textContent = filter ? `${shown.length} / ${state.clients.length}` : String(state.clients.length);
  $('clients-empty').hidden = shown.length > 0;
  $('clients-empty').textContent = state.clients.length ? 'No client matches the filter.' : 'No clients connected.';
}

function clientRow(id) {
  const cell = (cls) => el('td', { class: cls });
  const cells = {
    id: cell('id'),
    subs: cell('subs'),
    user: cell(''),
    node: cell(''),
    connected: cell(''),
    lastIn: cell('msg'),
    lastOut: cell('msg'),
    messages: cell('num'),
    bytes: cell('num'),
    queued: cell('num'),
    acts: cell('acts'),
  };
  const kind = el('div', { class: 'kind', hidden: '' });
  cells.id.append(id, kind);
  cells.id.title = id;
  const send = el('button', { type: 'button', class: 'small', 'data-action': 'send', onclick: () => openSend(id) }, 'Send');
  const kick = el(
    'button',
    { type: 'button', class: 'small warn', 'data-action': 'disconnect', onclick: () => openDisconnect(id) },
    'Disconnect',
  );
  const closing = el('span', { class: 'badge', hidden: '' });
  cells.acts.append(closing, send, kick);
  const tr = el('tr', { dataset: { id } }, ...Object.values(cells));
  return { tr, cells, kind, send, kick, closing };
}

function updateRow(row, c) {
  const { cells } = row;
  connectionKind(row.kind, c);
  subscriptions(cells.subs, c);
  setText(cells.user, c.user ?? 'anonymous');
  setText(cells.node, c.node ?? '-');
  moment(cells.connected, c.connectedAt, `from ${c.remoteAddr}`);
  lastMessage(cells.lastIn, c.lastMessageIn);
  lastMessage(cells.lastOut, c.lastMessageOut);
  setText(cells.messages, `${c.messagesIn} / ${c.messagesOut}`);
  setText(cells.bytes, `${bytes(c.bytesIn)} / ${bytes(c.bytesOut)}`);
  setText(cells.queued, c.dropped ? `${c.queued} (${c.dropped} dropped)` : String(c.queued));
  const closing = c.closing;
  row.tr.classList.toggle('closing', Boolean(closing));
  row.closing.hidden = !closing;
  row.send.hidden = Boolean(closing);
  row.kick.hidden = Boolean(closing);
  if (closing) setText(row.closing, `closing ${closing.code}`);
  row.closing.title = closing ? closing.reason : '';
}

/**
 * What one subscription selects, as one line of text: its topic, then its keys, its
 * pattern (or `*` for every key) and its conditions, e.g. `telemetry: sensor-* header.region=eu`.
 */
function subscriptionText(s) {
  return [`${s.topic}:`, ...selectorParts(s)].join(' ');
}

function selectorParts(s) {
  const parts = [];
  if (Array.isArray(s.keys)) parts.push(s.keys.join(', '));
  if (typeof s.pattern === 'string') parts.push(s.pattern);
  if (!Array.isArray(s.keys) && typeof s.pattern !== 'string') parts.push('*');
  for (const [name, value] of Object.entries(s.headers ?? {})) parts.push(`header.${name}=${value}`);
  for (const [pointer, value] of Object.entries(s.where ?? {})) parts.push(`where.${pointer}=${JSON.stringify(value)}`);
  return parts;
}

/** What kind of connection a client has, under its id: sluice.v1 (multiplexed), SSE, envelope. */
function connectionKind(box, c) {
  const tags = [];
  if (c.multiplexed) tags.push('sluice.v1');
  if (c.transport === 'sse') tags.push('SSE');
  if (c.envelope && !c.multiplexed) tags.push('envelope');
  const shown = tags.join(' ');
  if (box.shown === shown) return;
  box.shown = shown;
  box.replaceChildren(...tags.map((t) => el('span', { class: 'tag' }, t)));
  box.hidden = !tags.length;
}

/**
 * A client's subscriptions cell: one line each (`s1 telemetry: sensor-*`), the first few
 * only, all of them in its title. Rebuilt only when they changed, since the table is
 * refreshed every few seconds.
 */
function subscriptions(cell, c) {
  const subs = Array.isArray(c.subscriptions) ? c.subscriptions : [];
  const shown = JSON.stringify([c.multiplexed, subs]);
  if (cell.shown === shown) return;
  cell.shown = shown;
  const lines = subs.slice(0, SHOWN_SUBSCRIPTIONS).map((s) => {
    const [keys, ...conditions] = selectorParts(s);
    const parts = [
      s.id != null ? el('span', { class: 'sub-id' }, String(s.id)) : null,
      el('span', { class: 'sub-topic' }, `${s.topic}:`),
      el('span', { class: `sub-keys${typeof s.pattern === 'string' ? ' pattern' : ''}` }, keys),
      ...conditions.map((text) => el('span', { class: 'sub-cond' }, text)),
    ].filter(Boolean);
    // Spaces between the parts, so that the line copies as it reads.
    return el('div', { class: 'subn' }, ...parts.flatMap((part, i) => (i ? [' ', part] : [part])));
  });
  if (subs.length > SHOWN_SUBSCRIPTIONS) {
    lines.push(el('div', { class: 'sub-more' }, `+${subs.length - SHOWN_SUBSCRIPTIONS} more`));
  }
  if (!subs.length) lines.push(el('div', { class: 'sub-more' }, c.multiplexed ? 'no subscription yet' : '-'));
  cell.replaceChildren(...lines);
  cell.title = subs.map((s) => `${s.id != null ? `${s.id} ` : ''}${subscriptionText(s)}`).join('\n');
}

/** A time cell: the local clock time, and how long ago below it. */
function moment(cell, iso, detail) {
  const at = new Date(iso);
  cell.replaceChildren(clock(at), el('span', { class: 'sub' }, ago(at)));
  cell.title = `${iso}${detail ? `\n${detail}` : ''}`;
}

function lastMessage(cell, m) {
  if (!m) {
    setText(cell, '-');
    cell.title = '';
    return;
  }
  const data = m.encoding === 'base64' ? `[base64] ${m.data}` : m.data;
  const at = new Date(m.at);
  const text = `${data}\u0000${m.at}`;
  if (cell.dataset.shown === text) {
    cell.lastChild.textContent = `${clock(at)} · ${ago(at)}`;
    return;
  }
  cell.dataset.shown = text;
  cell.replaceChildren(el('span', { class: 'data' }, data), el('span', { class: 'sub' }, `${clock(at)} · ${ago(at)}`));
  cell.title = data;
}

function clock(date) {
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour12: false });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i += 1;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// ---------------------------------------------------------------- one client: send, disconnect

function openSend(id) {
  $('send-dialog').dataset.target = id;
  $('send-target').textContent = id;
  $('send-body').value = '';
  $('send-dialog').showModal();
  $('send-body').focus();
}

async function sendToClient(event) {
  event.preventDefault();
  const id = $('send-dialog').dataset.target;
  const text = $('send-body').value;
  $('send-dialog').close();
  try {
    await api('POST', `/api/clients/${encodeURIComponent(id)}/messages`, { text });
    toast(`Message queued for ${id}`);
  } catch (error) {
    toast(`Not sent to ${id}: ${describe(error)}`, true);
  }
  refreshSoon();
}

function openDisconnect(id) {
  $('disconnect-dialog').dataset.target = id;
  $('disconnect-target').textContent = id;
  $('disconnect-dialog').showModal();
  $('disconnect-reason').focus();
}

async function disconnectClient(event) {
  event.preventDefault();
  const id = $('disconnect-dialog').dataset.target;
  const query = new URLSearchParams({ code: $('disconnect-code').value, reason: $('disconnect-reason').value });
  $('disconnect-dialog').close();
  try {
    await api('DELETE', `/api/clients/${encodeURIComponent(id)}?${query}`);
    toast(`Closing ${id} with ${query.get('code')}`);
  } catch (error) {
    toast(`Not disconnected: ${describe(error)}`, true);
  }
  refreshSoon();
}

let toastTimer = null;
function toast(text, bad = false) {
  const box = $('toast');
  box.textContent = text;
  box.className = `toast${bad ? ' bad' : ''}`;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

// ---------------------------------------------------------------- broadcast and publish

/** Shows an API answer under a form: the status, and the JSON body as text. */
function showResult(output, status, body, ok) {
  output.className = `result ${ok ? 'ok' : 'bad'}`;
  output.dataset.status = String(status);
  const json = body == null ? '' : JSON.stringify(body);
  output.replaceChildren(el('span', { class: 'status' }, String(status)), el('code', {}, json));
  output.title = json;
}

async function submitApi(event, output, method, path, text) {
  event.preventDefault();
  output.replaceChildren('…');
  try {
    const { status, data } = await api(method, path, { text });
    showResult(output, status, data, true);
  } catch (error) {
    if (error instanceof ApiError) showResult(output, error.status, error.body, false);
    else showResult(output, 'failed', { error: error.message }, false);
  }
}

function broadcast(event) {
  const key = $('broadcast-key').value;
  const path = key ? `/api/broadcast?${new URLSearchParams({ key })}` : '/api/broadcast';
  submitApi(event, $('broadcast-result'), 'POST', path, $('broadcast-body').value);
}

function publish(event) {
  const key = $('publish-key').value;
  submitApi(event, $('publish-result'), 'POST', `/api/publish/${encodeURIComponent(key)}`, $('publish-body').value);
}

// ---------------------------------------------------------------- events

// EventSource cannot send an Authorization header: read the stream with fetch.
async function startEvents() {
  if (state.events.controller) return;
  clearTimeout(state.events.retry);
  state.events.wanted = true;
  const controller = new AbortController();
  state.events.controller = controller;
  $('events-toggle').textContent = 'Stop';
  eventsState('connecting…');
  try {
    const response = await fetch('/api/events', {
      headers: { Authorization: `Bearer ${state.token}` },
      signal: controller.signal,
      cache: 'no-store',
    });
    if (response.status === 401) {
      signOut('The admin token was refused (401). Paste the current one.');
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    eventsState('live');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, '\n');
      // An event ends at a blank line.
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        onSseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    throw new Error('the stream ended');
  } catch (error) {
    if (state.events.controller !== controller) return;
    state.events.controller = null;
    if (controller.signal.aborted || !state.events.wanted) return;
    eventsState(`reconnecting (${error.message})`);
    state.events.retry = setTimeout(() => state.events.wanted && state.signedIn && startEvents(), RETRY_MS);
  }
}

function stopEvents() {
  state.events.wanted = false;
  clearTimeout(state.events.retry);
  const controller = state.events.controller;
  state.events.controller = null;
  if (controller) controller.abort();
  $('events-toggle').textContent = 'Start';
  eventsState('stopped');
}

function eventsState(text) {
  $('events-state').textContent = text;
}

function onSseBlock(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  const raw = data.join('\n');
  if (type === 'lagged') {
    addEvent({ type: 'lagged', text: `${raw} events missed: this page fell behind`, raw });
    return;
  }
  let e;
  try {
    e = JSON.parse(raw);
  } catch {
    addEvent({ type: 'message', text: raw, raw });
    return;
  }
  let detail = '';
  if (e.type === 'message') detail = e.encoding === 'base64' ? `[base64] ${e.data}` : String(e.data);
  else if (e.type === 'disconnect') detail = `${e.code}${e.reason ? ` ${e.reason}` : ''}`;
  else if (e.type === 'connect') detail = `${e.user ?? 'anonymous'} from ${e.remoteAddr}`;
  else if (e.type === 'subscribe') detail = `${e.subscription?.id ?? ''} ${JSON.stringify(e.subscription ?? {})}`;
  else if (e.type === 'unsubscribe') detail = String(e.id);
  addEvent({ type: String(e.type), at: e.at, key: e.key, id: e.replyId, text: detail, raw });
  // The clients table shows each client's subscriptions: it changes with these too.
  if (['connect', 'disconnect', 'subscribe', 'unsubscribe'].includes(e.type)) refreshSoon();
}

function addEvent({ type, at, key, id, text, raw }) {
  const list = $('events-list');
  const when = at ? new Date(at) : new Date();
  // A multiplexed connection has no key: its id alone says who.
  const who = [key, id ? id.slice(0, 8) : null].filter((part) => part != null).join(' ');
  const li = el(
    'li',
    { title: raw },
    el('span', { class: 'time' }, when.toLocaleTimeString([], { hour12: false })),
    el('span', { class: `type type-${type.replace(/[^a-z]/g, '')}` }, type),
    who ? el('span', { class: 'who' }, who) : null,
    el('span', { class: 'text' }, text),
  );
  li.search = `${type} ${raw}`.toLowerCase();
  li.hidden = !eventMatches(li);
  list.prepend(li);
  while (list.children.length > MAX_LOG) list.lastChild.remove();
  state.events.total += 1;
  countEvents();
}

function eventMatches(li) {
  const filter = $('events-filter').value.trim().toLowerCase();
  return !filter || li.search.includes(filter);
}

function filterEvents() {
  for (const li of $('events-list').children) li.hidden = !eventMatches(li);
  countEvents();
}

function countEvents() {
  const items = [...$('events-list').children];
  const shown = items.filter((li) => !li.hidden).length;
  $('events-count').textContent = shown === items.length ? String(items.length) : `${shown} / ${items.length}`;
}

// ---------------------------------------------------------------- data: records, as a client sees them

/** ws[s]://host:port of the subscriptions, which may be another port than this page's. */
function wsBase() {
  const ws = state.info.websocket;
  if (ws.sameOrigin) return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  return `${ws.scheme}://${location.hostname}:${ws.port}`;
}

/**
 * What the data pane's field asks for, as the library's selector: `*` every key, a glob
 * (`sensor-*`, `line-?`) a pattern, anything else one exact key.
 */
function watchSelector(text) {
  if (text === '*') return {};
  if (/[*?]/.test(text)) return { pattern: text };
  return { keys: [text] };
}

/** A client token that opens exactly what is watched, minted with the admin token. */
async function watchToken(key) {
  return (await api('POST', '/api/tokens', { json: { sub: 'console', keys: [key], ttl: 3600 } })).data.token;
}

/**
 * Watches records as a client receives them, through the client library on a multiplexed
 * connection to the subscription port: the token is minted afresh on every (re)connect, and
 * after a drop the library reconnects and resumes from the last record shown, so that
 * nothing is missed or shown twice.
 */
function startData() {
  stopData();
  const key = $('data-key').value.trim() || '*';
  const base = `${wsBase()}/`;
  const selector = watchSelector(key);
  const what = selectorParts(selector).join(' ');
  state.data.count = 0;
  $('data-count').textContent = '0';
  $('data-list').replaceChildren();
  $('data-toggle').textContent = 'Stop';
  dataState(`connecting to ${base}…`);
  let client;
  try {
    client = new Sluice(base, {
      // Asked on every (re)connect: a fresh token each time.
      token: async () => {
        if (state.data.client === client) dataState('getting a client token…');
        try {
          return await watchToken(key);
        } catch (error) {
          // A refusal that asking again cannot change (400: a key too long, say) ends the
          // watch; while the gateway cannot be reached, the library tries again.
          if (error instanceof ApiError && error.status < 500 && state.data.client === client) {
            stopData();
            dataState(`no client token: ${describe(error)}`, 'bad');
          }
          throw new Error(describe(error));
        }
      },
    });
  } catch (error) {
    $('data-toggle').textContent = 'Watch';
    dataState(`cannot watch: ${error.message}`, 'bad');
    return;
  }
  state.data.client = client;
  const mine = (listener) => (value) => state.data.client === client && listener(value);
  // What the last close or failure was, shown with the wait before the next attempt.
  let trouble = null;
  let connectedAs = null;
  client.on('connected', mine(({ replyId }) => {
    connectedAs = replyId;
    trouble = null;
    dataState(`connected to ${base} as ${replyId}`, 'ok');
  }));
  client.on('subscribed', mine((answer) => {
    const as = connectedAs ? ` as ${connectedAs}` : '';
    const lost = answer.resumed === false ? ' (some records were no longer available)' : '';
    dataState(`connected to ${base}${as} · watching ${what}${lost}`, lost ? 'bad' : 'ok');
  }));
  client.on('disconnected', mine(({ code, reason }) => {
    connectedAs = null;
    trouble = `closed ${code}${reason ? ` ${reason}` : ''}`;
    dataState(trouble, 'bad');
  }));
  client.on('error', mine((error) => {
    if (error.id) {
      // The subscription was refused (a topic not configured, a token that no longer
      // grants it): retrying would not change that.
      stopData();
      dataState(`refused: ${error.status ? `${error.status} ` : ''}${error.message}`, 'bad');
      return;
    }
    trouble = /closed with code 1006/.test(error.message)
      ? `the gateway refused the connection or ${wsBase()} cannot be reached from this browser`
      : error.message;
    dataState(trouble, 'bad');
  }));
  client.on('reconnecting', mine(({ delay }) => {
    dataState(`${trouble ?? 'disconnected'}; reconnecting in ${(delay / 1000).toFixed(1)} s`, 'bad');
  }));
  // A refusal is also an `error` event, handled above; a stop before the answer ends it too.
  client.subscribe(selector, mine((record) => addRecord(record))).catch(() => {});
}

function stopData(reason) {
  const client = state.data.client;
  state.data.client = null;
  $('data-toggle').textContent = 'Watch';
  if (client) {
    client.close();
    dataState(reason || 'stopped');
  }
}

function dataState(text, kind = '') {
  const box = $('data-state');
  box.className = `state ${kind || 'muted'}`;
  box.textContent = text;
}

/** A value as text: JSON as JSON, other text as it is, bytes by their size. */
function valueText(value) {
  if (value instanceof Uint8Array) return `[binary, ${value.byteLength} bytes]`;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** A record from the library: its key and value, or with `envelope` ticked all of it. */
function addRecord(record) {
  const list = $('data-list');
  const text = $('data-envelope').checked
    ? JSON.stringify({ ...record, value: record.value instanceof Uint8Array ? valueText(record.value) : record.value })
    : valueText(record.value);
  const li = el(
    'li',
    { title: text },
    el('span', { class: 'time' }, new Date().toLocaleTimeString([], { hour12: false })),
    el('span', { class: 'who' }, record.key ?? '(no key)'),
    el('span', { class: 'text' }, text),
  );
  list.prepend(li);
  while (list.children.length > MAX_LOG) list.lastChild.remove();
  state.data.count += 1;
  $('data-count').textContent = String(state.data.count);
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('login-token').value.trim();
    if (token) signIn(token);
  });
  $('forget').addEventListener('click', () => signOut('Token forgotten. Paste one to open the console again.'));
  $('client-filter').addEventListener('input', renderClients);
  $('send-form').addEventListener('submit', sendToClient);
  $('disconnect-form').addEventListener('submit', disconnectClient);
  for (const button of document.querySelectorAll('dialog [data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close());
  }
  $('broadcast-form').addEventListener('submit', broadcast);
  $('publish-form').addEventListener('submit', publish);
  $('events-toggle').addEventListener('click', () => (state.events.wanted ? stopEvents() : startEvents()));
  $('events-clear').addEventListener('click', () => {
    $('events-list').replaceChildren();
    countEvents();
  });
  $('events-filter').addEventListener('input', filterEvents);
  $('data-toggle').addEventListener('click', () => (state.data.client ? stopData() : startData()));
  $('data-key').addEventListener('keydown', (event) => {
    if (event.key === 'Enter') startData();
  });
}

wire();
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
else showLogin('');
