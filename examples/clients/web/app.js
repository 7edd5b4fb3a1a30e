// SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
//
// The presence dashboard behind index.html: logs in over MQTT websockets (MQTT.js, the global
// `mqtt`), subscribes to presence/+ and shows one row per user, updated live: a green
// (available) or grey dot, the name, the state as "key: value" lines and "since". Above the
// list: how many users are online, and a search box over names and states. The form sets the
// user's own state key "status"; the "appear invisible" switch sets who may see the user
// (presence/<me>/privacy: nobody or everyone, README "Who sees whom").
//
// A zero-length message on presence/<user> means that user is gone for this watcher: forgotten
// by the broker, or hidden from it (invisible, or no longer shown to this user): its row goes.
//
// Order: online users first, then offline ones, each group by name. A dashboard kept open is
// read by looking a user up: by name, each row keeps its place while states change, where an
// order by most recent change would move rows under the reader's eyes at every status update.
//
// The broker is the one that served the page (ws://<host>/), or ?broker=ws://host:port/.
'use strict';

const prefix = 'presence';
const $ = (id) => document.getElementById(id);
// user name -> { doc: the newest presence document (highest seq), connection: the number of
// the connection it came on }
const users = new Map();
let client = null;
let me = '';
let connection = 0; // counts successful connections, see onMessage
let renderTimer = null;

// A user name as one topic level, as the plugin encodes it (README, "The contract").
function topicLevel(name) {
  return name.replace(/%/g, '%25').replace(/\//g, '%2F').replace(/\+/g, '%2B').replace(/#/g, '%23');
}

// The user name of a document topic (presence/<level>), or null for any other topic.
function userOfTopic(topic) {
  const level = topic.startsWith(`${prefix}/`) ? topic.slice(prefix.length + 1) : '';
  if (!level || level.includes('/')) return null;
  const codes = { '%25': '%', '%2F': '/', '%2B': '+', '%23': '#' };
  return level.replace(/%(25|2F|2B|23)/g, (code) => codes[code]);
}

function brokerUrl() {
  const asked = new URLSearchParams(location.search).get('broker');
  if (asked) return asked;
  if (location.protocol === 'https:') return `wss://${location.host}/`;
  if (location.protocol === 'http:') return `ws://${location.host}/`;
  return 'ws://localhost:9001/';
}

// A state as [key, value] text pairs: nested objects flattened to "a.b", arrays of plain
// values joined with ", ", other arrays numbered ("a[0].b"). Every value is text.
function stateLines(value, path = '', out = []) {
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== 'object')) {
      out.push([path, value.length ? value.map(plainText).join(', ') : '[]']);
    } else {
      value.forEach((v, i) => stateLines(v, `${path}[${i}]`, out));
    }
  } else if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (!entries.length && path) out.push([path, '{}']);
    for (const [key, v] of entries) stateLines(v, path ? `${path}.${key}` : key, out);
  } else {
    out.push([path, plainText(value)]);
  }
  return out;
}

function plainText(value) {
  return typeof value === 'string' ? value : String(value);
}

const dayMs = 24 * 60 * 60 * 1000;
const startOfDay = (date) => new Date(date.getFullYear(), date.getMonth(), date.getDate());

// "since" for a row: the time alone when it is today (by the browser's clock and time zone),
// otherwise the date and time and how many days ago; `title` is the exact moment.
function describeSince(since, now) {
  const when = new Date(since);
  if (!Number.isFinite(when.getTime())) return { text: 'unknown', title: String(since) };
  const title = when.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'long' });
  const days = Math.round((startOfDay(now) - startOfDay(when)) / dayMs);
  if (days === 0) return { text: when.toLocaleTimeString(), title };
  const date = when.toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit',
    year: when.getFullYear() === now.getFullYear() ? undefined : 'numeric',
  });
  if (days < 0) return { text: date, title }; // a clock ahead of this browser's
  const ago = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }).format(-days, 'day');
  return { text: `${date} (${ago})`, title };
}

// Online first, then by name.
function byOnlineThenName(a, b) {
  if (a.available !== b.available) return a.available ? -1 : 1;
  return a.username < b.username ? -1 : a.username > b.username ? 1 : 0;
}

// Everything shown comes from other users (names, states): it is set as text
// (textContent), never parsed as HTML.
function row(doc, lines, now) {
  const item = document.createElement('li');
  item.dataset.user = doc.username;
  item.dataset.available = String(doc.available);
  item.dataset.since = String(doc.since);
  const cell = (cls, text) => {
    const el = document.createElement('span');
    el.className = cls;
    el.textContent = text;
    item.append(el);
    return el;
  };
  cell('dot', '');
  cell('name', doc.username + (doc.username === me ? ' (you)' : ''));
  const state = cell('state', '');
  for (const [key, value] of lines) {
    const line = document.createElement('div');
    const k = document.createElement('span');
    k.className = 'key';
    k.textContent = `${key}: `;
    line.append(k, value);
    state.append(line);
  }
  const since = describeSince(doc.since, now);
  cell('since', `${doc.available ? 'online' : 'offline'} since ${since.text}`).title = since.title;
  return item;
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = null;
  const now = new Date();
  const needle = $('filter').value.trim().toLowerCase();
  const docs = [...users.values()].map((u) => u.doc).sort(byOnlineThenName);
  const online = docs.filter((d) => d.available).length;
  const rows = [];
  for (const doc of docs) {
    const lines = stateLines(doc.state || {});
    const text = [doc.username, ...lines.map(([k, v]) => `${k}: ${v}`)].join('\n').toLowerCase();
    if (!needle || text.includes(needle)) rows.push(row(doc, lines, now));
  }
  $('count').firstChild.textContent = `${online} of ${docs.length} online `;
  $('shown').textContent = needle ? `(${rows.length} shown)` : '';
  if (needle && !rows.length) {
    const none = document.createElement('li');
    none.className = 'empty';
    none.textContent = `Nobody matches "${$('filter').value.trim()}".`;
    rows.push(none);
  }
  $('buddies').replaceChildren(...rows);
}

// Many documents arrive at once (every retained one on subscribing): one render for them all.
function scheduleRender() {
  if (!renderTimer) renderTimer = setTimeout(render, 0);
}

// The connection's state in the status line: idle, connecting, connected, offline or error.
function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function showNotice(text) {
  $('notice').textContent = text;
  $('notice').hidden = !text;
}

function onMessage(topic, payload) {
  if (topic === `${prefix}/${topicLevel(me)}/error`) {
    showNotice(`Refused: ${JSON.parse(payload.toString()).error}`);
    return;
  }
  if (!payload.length) {
    // Deleted: forgotten, or no longer visible to this watcher. Never our own row: a user's
    // own sessions always see its document.
    const name = userOfTopic(topic);
    if (name !== null && name !== me && users.delete(name)) scheduleRender();
    return;
  }
  let doc;
  try {
    doc = JSON.parse(payload.toString());
  } catch (e) {
    return; // not a presence document
  }
  if (!doc || typeof doc.username !== 'string') return;
  const known = users.get(doc.username);
  // Documents of one user are ordered by seq: a late retained copy must not undo a newer one.
  // What came on an earlier connection is replaced by what comes on this one whatever its seq
  // (a broker that lost its state starts again at seq 1).
  if (known && known.connection === connection && known.doc.seq >= doc.seq) return;
  users.set(doc.username, { doc, connection });
  scheduleRender();
}

function showLogin(on) {
  $('login').hidden = !on;
  $('mine').hidden = on;
}

// The broker never tells a user its own privacy choice (presence/<me>/privacy is write-only):
// the switch shows what this browser last set for this user.
const invisibleKey = () => `presence-invisible:${me}`;
function rememberedInvisible() {
  try {
    return localStorage.getItem(invisibleKey()) === '1';
  } catch (e) {
    return false; // storage disabled
  }
}

function connect(username, password) {
  me = username;
  showNotice('');
  const url = brokerUrl();
  let lostAt = null; // when the connection was lost; null while connected
  const lost = () => (lostAt || (lostAt = new Date())).toLocaleTimeString();
  // resubscribe: false, because every 'connect' subscribes (and so gets the retained documents).
  const c = mqtt.connect(url, { username, password, protocolVersion: 5, clean: true, resubscribe: false });
  client = c;
  // Events of a client given up for a new login change nothing.
  const on = (event, handler) => c.on(event, (...args) => { if (c === client) handler(...args); });
  setStatus('connecting', `Connecting to ${url} ...`);
  on('connect', () => {
    connection++;
    lostAt = null;
    setStatus('connected', `Connected as ${me}.`);
    showLogin(false);
    $('invisible').checked = rememberedInvisible();
    c.subscribe([`${prefix}/+`, `${prefix}/${topicLevel(me)}/error`], { qos: 1 });
  });
  on('message', onMessage);
  // 'close' comes at every lost connection and every failed attempt; the status says since
  // when the connection is lost until 'connect' says it is back.
  on('disconnect', (packet) => {
    setStatus('offline', `The broker closed the connection (reason code ${packet.reasonCode}).`);
  });
  on('close', () => {
    if (c.disconnecting || $('status').dataset.state === 'error') return;
    setStatus('offline', `Connection lost at ${lost()}, reconnecting ...`);
  });
  on('reconnect', () => {
    setStatus('connecting', `Connection lost at ${lost()}, reconnecting to ${url} ...`);
  });
  on('error', (err) => {
    setStatus('error', `Error: ${err.message}`);
    // Refused logins (bad user name or password, not authorised): stop, and ask again.
    if (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135) {
      c.end();
      showLogin(true);
    }
  });
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  if (client) client.end(true);
  connect($('username').value, $('password').value);
});

$('mine').addEventListener('submit', (event) => {
  event.preventDefault();
  showNotice('');
  // One state key; an empty payload removes it (README, "State writes").
  client.publish(`${prefix}/${topicLevel(me)}/state/status`, $('mystatus').value, { qos: 1 });
});

// Invisible: to everyone else this user does not exist (their pages remove its row); visible
// again: they get its document back. Not retained: the broker keeps the choice.
$('invisible').addEventListener('change', () => {
  if (!client) return;
  const invisible = $('invisible').checked;
  showNotice('');
  client.publish(`${prefix}/${topicLevel(me)}/privacy`,
    JSON.stringify({ visible_to: invisible ? 'nobody' : 'everyone' }), { qos: 1 });
  try {
    localStorage.setItem(invisibleKey(), invisible ? '1' : '0');
  } catch (e) {
    // storage disabled: the switch forgets it at the next login
  }
});

$('filter').addEventListener('input', render);
// "since" ages: refreshed every half minute, and when the tab is shown again.
setInterval(render, 30000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) render(); });
render();
