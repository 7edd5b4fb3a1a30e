// SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
//
// The buddy list behind index.html: logs in over MQTT websockets (MQTT.js, the global `mqtt`),
// subscribes to presence/+ and shows one line per user with a green (available) or grey dot,
// the state and "since", updated live; the form sets the user's own state key "status".
//
// The broker is the one that served the page (ws://<host>/), or ?broker=ws://host:port/.
'use strict';

const prefix = 'presence';
const users = new Map(); // user name -> the newest presence document (highest seq)
const $ = (id) => document.getElementById(id);
let client = null;
let me = '';

// A user name as one topic level, as the plugin encodes it (README, "The contract").
function topicLevel(name) {
  return name.replace(/%/g, '%25').replace(/\//g, '%2F').replace(/\+/g, '%2B').replace(/#/g, '%23');
}

function brokerUrl() {
  const asked = new URLSearchParams(location.search).get('broker');
  if (asked) return asked;
  if (location.protocol === 'https:') return `wss://${location.host}/`;
  if (location.protocol === 'http:') return `ws://${location.host}/`;
  return 'ws://localhost:9001/';
}

function describeState(state) {
  return Object.entries(state || {})
    .map(([key, value]) => `${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(', ');
}

function render() {
  const list = $('buddies');
  list.replaceChildren();
  for (const name of [...users.keys()].sort()) {
    const doc = users.get(name);
    const item = document.createElement('li');
    item.dataset.user = name;
    item.dataset.available = String(doc.available);
    // Names and states come from other users: shown as text, never parsed as HTML.
    const cell = (cls, text) => {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      item.append(span);
    };
    cell('dot', '');
    cell('name', name + (name === me ? ' (you)' : ''));
    cell('state', describeState(doc.state));
    const when = new Date(doc.since).toLocaleTimeString();
    cell('since', `${doc.available ? 'online' : 'offline'} since ${when}`);
    list.append(item);
  }
}

function onMessage(topic, payload) {
  if (topic === `${prefix}/${topicLevel(me)}/error`) {
    $('status').textContent = `Refused: ${JSON.parse(payload.toString()).error}`;
    return;
  }
  let doc;
  try {
    doc = JSON.parse(payload.toString());
  } catch (e) {
    return; // not a presence document
  }
  const known = users.get(doc.username);
  // Documents of one user are ordered by seq: a late retained copy must not undo a newer one.
  if (known && known.seq >= doc.seq) return;
  users.set(doc.username, doc);
  render();
}

function connect(username, password) {
  me = username;
  client = mqtt.connect(brokerUrl(), { username, password, protocolVersion: 5, clean: true });
  $('status').textContent = `Connecting to ${brokerUrl()} ...`;
  client.on('connect', () => {
    $('status').textContent = `Connected as ${me}.`;
    $('login').hidden = true;
    $('mine').hidden = false;
    client.subscribe([`${prefix}/+`, `${prefix}/${topicLevel(me)}/error`], { qos: 1 });
  });
  client.on('message', onMessage);
  client.on('error', (err) => {
    $('status').textContent = `Error: ${err.message}`;
    if (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135) client.end();
  });
  client.on('offline', () => { $('status').textContent = 'Offline, reconnecting ...'; });
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  connect($('username').value, $('password').value);
});

$('mine').addEventListener('submit', (event) => {
  event.preventDefault();
  // One state key; an empty payload removes it (README, "State writes").
  client.publish(`${prefix}/${topicLevel(me)}/state/status`, $('mystatus').value, { qos: 1 });
});
