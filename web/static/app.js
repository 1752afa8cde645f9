// The chat page: login and registration, conversations with history and unread
// marks, sending with receipts, and the connection's state, on top of the protocol
// client in moechat.js. Message text only ever reaches the page through
// `textContent`: nothing a message says is read as markup or script.

import { Client, ConnectionClosed, describe, pageUrl } from './moechat.js';

const EVERYONE = '*';
const PAGE = 50;
const USERS_EVERY_MS = 5_000;
const SAVED = 'moechat.session';

const $ = (id) => document.getElementById(id);

const ui = {
  status: $('status'),
  alert: $('alert'),
  logout: $('logout'),
  welcome: $('welcome'),
  loginForm: $('login-form'),
  user: $('user'),
  password: $('password'),
  login: $('login'),
  register: $('register'),
  chat: $('chat'),
  conversations: $('conversations'),
  newChat: $('new-chat'),
  newPeer: $('new-peer'),
  title: $('title'),
  away: $('away'),
  earlier: $('earlier'),
  messages: $('messages'),
  composer: $('composer'),
  text: $('text'),
};

const state = {
  client: null,
  me: null,
  loggedInAt: 0,
  awayCount: 0,
  current: EVERYONE,
  online: new Set(),
  conversations: new Map(),
  usersTimer: null,
};

function conversation(key) {
  let c = state.conversations.get(key);
  if (!c) {
    c = { key, messages: new Map(), unread: 0, loaded: false, more: false, oldest: null };
    state.conversations.set(key, c);
  }
  return c;
}

function showAlert(text) {
  ui.alert.textContent = text;
  ui.alert.hidden = !text;
}

function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
}

function errorText(error) {
  if (error && typeof error.code === 'number') {
    return error.reason ? `${describe(error.code)} (${error.reason})` : describe(error.code);
  }
  return error?.message ?? String(error);
}

function keyOf(message) {
  if (message.kind === 'broadcast') return EVERYONE;
  return message.sender === state.me ? message.recipient : message.sender;
}

function titleOf(key) {
  return key === EVERYONE ? 'Everyone' : key;
}

// ---- rendering --------------------------------------------------------------

function renderConversations() {
  const keys = new Set([EVERYONE, ...state.conversations.keys(), ...state.online]);
  keys.delete(state.me);
  const sorted = [...keys].sort((a, b) => (a === EVERYONE ? -1 : b === EVERYONE ? 1 : a.localeCompare(b)));
  ui.conversations.replaceChildren(...sorted.map((key) => {
    const c = state.conversations.get(key);
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'conversation-button';
    button.dataset.key = key;
    if (key === state.current) button.setAttribute('aria-current', 'true');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = titleOf(key);
    button.append(name);
    if (key !== EVERYONE) {
      const online = state.online.has(key);
      const dot = document.createElement('span');
      dot.className = online ? 'presence online' : 'presence';
      dot.textContent = online ? 'online' : 'offline';
      button.append(dot);
    }
    if (c && c.unread > 0) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.textContent = String(c.unread);
      badge.setAttribute('aria-label', `${c.unread} unread`);
      button.append(badge);
    }
    button.addEventListener('click', () => openConversation(key));
    li.append(button);
    return li;
  }));
}

function messageItem(m) {
  const li = document.createElement('li');
  li.className = m.sender === state.me ? 'message mine' : 'message';
  if (m.msg_id !== null) li.dataset.msgId = String(m.msg_id);
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'sender';
  who.textContent = m.sender === state.me ? 'you' : m.sender;
  const when = document.createElement('time');
  const date = new Date(m.ts);
  when.dateTime = date.toISOString();
  when.textContent = date.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  meta.append(who, ' · ', when);
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = m.text;
  li.append(meta, text);
  if (m.note) {
    const note = document.createElement('div');
    note.className = m.failed ? 'note failed' : 'note';
    note.textContent = m.note;
    li.append(note);
  }
  return li;
}

function renderMessages() {
  const c = conversation(state.current);
  ui.title.textContent = titleOf(state.current);
  ui.earlier.hidden = !c.more;
  const ordered = [...c.messages.values()].sort((a, b) => order(a) - order(b));
  const nearBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
  ui.messages.replaceChildren(...ordered.map(messageItem));
  if (nearBottom || c.justOpened) ui.messages.scrollTop = ui.messages.scrollHeight;
  c.justOpened = false;
}

// Messages being sent have no msg_id yet: they sort after every stored one.
function order(m) {
  return m.msg_id ?? Number.MAX_SAFE_INTEGER - 1_000_000 + m.local;
}

function render() {
  renderConversations();
  renderMessages();
}

// ---- conversations -----------------------------------------------------------

function add(key, message) {
  const c = conversation(key);
  const id = message.msg_id ?? `local-${message.local}`;
  c.messages.set(id, message);
  if (c.oldest === null || (message.msg_id !== null && message.msg_id < c.oldest)) {
    c.oldest = message.msg_id;
  }
}

async function loadHistory(key, before = null) {
  const c = conversation(key);
  try {
    const messages = await state.client.history(key, { limit: PAGE, before });
    // A message already shown keeps its receipt note.
    for (const m of messages) if (!c.messages.has(m.msg_id)) add(key, { ...m });
    c.more = messages.length === PAGE;
    if (messages.length > 0) c.oldest = Math.min(c.oldest ?? Infinity, messages[0].msg_id);
    c.loaded = true;
  } catch (e) {
    showAlert(`Could not load the history: ${errorText(e)}`);
  }
  if (key === state.current) render();
}

async function openConversation(key) {
  state.current = key;
  const c = conversation(key);
  c.unread = 0;
  c.justOpened = true;
  render();
  ui.text.focus();
  if (!c.loaded) await loadHistory(key);
}

function onMessage(message) {
  const key = keyOf(message);
  add(key, { ...message });
  const c = conversation(key);
  if (key !== state.current || document.hidden) c.unread += 1;
  if (message.ts < state.loggedInAt) {
    state.awayCount += 1;
    ui.away.textContent = state.awayCount === 1
      ? '1 message arrived while you were away.'
      : `${state.awayCount} messages arrived while you were away.`;
    ui.away.hidden = false;
  }
  if (message.kind === 'direct') state.online.add(message.sender);
  render();
}

let localIds = 0;

async function send(text) {
  const key = state.current;
  const pending = {
    msg_id: null,
    local: ++localIds,
    kind: key === EVERYONE ? 'broadcast' : 'direct',
    sender: state.me,
    recipient: key === EVERYONE ? null : key,
    text,
    ts: Date.now(),
    note: 'sending…',
  };
  add(key, pending);
  render();
  const c = conversation(key);
  try {
    const receipt = key === EVERYONE
      ? await state.client.broadcast(text)
      : await state.client.send(key, text);
    c.messages.delete(`local-${pending.local}`);
    let note;
    if (key === EVERYONE) {
      note = receipt.recipients === 0
        ? 'sent; nobody else is online'
        : `delivered to ${receipt.recipients} ${receipt.recipients === 1 ? 'user' : 'users'} online`;
    } else {
      note = receipt.stored ? 'stored: delivered when they log in' : 'delivered';
    }
    add(key, { ...pending, msg_id: receipt.msg_id, note });
  } catch (e) {
    pending.note = `not sent: ${errorText(e)}`;
    pending.failed = true;
    showAlert(errorText(e));
  }
  if (key === state.current) render();
}

async function refreshUsers() {
  if (!state.client || state.client.state !== 'online') return;
  try {
    state.online = new Set(await state.client.users());
    renderConversations();
  } catch {
    // The connection state says what went wrong.
  }
}

// ---- connection ----------------------------------------------------------------

function onState({ detail }) {
  switch (detail.state) {
    case 'online':
      setStatus(`Connected as ${state.me ?? ''}`.trim(), 'online');
      break;
    case 'connecting':
    case 'connected':
      setStatus('Connecting…', 'connecting');
      break;
    case 'reconnecting': {
      const why = detail.code !== null ? ` ${describe(detail.code)}` : '';
      setStatus(`Reconnecting…${why}`, 'reconnecting');
      break;
    }
    case 'closed':
      if (state.me !== null) signedOut(detail);
      break;
    default:
      break;
  }
}

function signedOut(detail) {
  const reason = detail.code !== null ? describe(detail.code) : detail.reason;
  sessionStorage.removeItem(SAVED);
  clearInterval(state.usersTimer);
  state.client = null;
  state.me = null;
  setStatus('Not connected', 'closed');
  if (detail.reason !== 'logged out') showAlert(reason ?? 'Disconnected.');
  ui.chat.hidden = true;
  ui.welcome.hidden = false;
  ui.logout.hidden = true;
  ui.password.value = '';
  ui.user.focus();
}

async function connected() {
  if (state.client && !state.client.closed) return state.client;
  const client = new Client(pageUrl());
  client.addEventListener('state', onState);
  await client.connect();
  state.client = client;
  return client;
}

function enterChat(user, session) {
  state.me = user;
  state.loggedInAt = Date.now();
  state.awayCount = 0;
  state.conversations.clear();
  sessionStorage.setItem(SAVED, JSON.stringify({ user, session }));
  showAlert('');
  ui.welcome.hidden = true;
  ui.chat.hidden = false;
  ui.logout.hidden = false;
  ui.away.hidden = true;
  setStatus(`Connected as ${user}`, 'online');
  // Listening starts here: pushes that came with the login are handed over now.
  state.client.addEventListener('message', (e) => onMessage(e.detail));
  state.client.addEventListener('resumed', () => {
    refreshUsers();
    for (const c of state.conversations.values()) c.loaded = false;
    loadHistory(state.current);
  });
  state.usersTimer = setInterval(refreshUsers, USERS_EVERY_MS);
  refreshUsers();
  openConversation(EVERYONE);
}

async function logIn(register) {
  const user = ui.user.value.trim();
  const password = ui.password.value;
  if (!user || !password) {
    showAlert('Enter a name and a password.');
    return;
  }
  ui.login.disabled = true;
  ui.register.disabled = true;
  try {
    const client = await connected();
    if (register) await client.register(user, password);
    const session = await client.login(user, password);
    enterChat(user, session);
  } catch (e) {
    showAlert(e instanceof ConnectionClosed || e.code === null
      ? `Cannot reach the server: ${e.message}`
      : errorText(e));
    if (state.client && state.client.state !== 'connected') state.client = null;
  } finally {
    ui.login.disabled = false;
    ui.register.disabled = false;
  }
}

async function resumeSaved() {
  const saved = sessionStorage.getItem(SAVED);
  if (!saved) return;
  try {
    const { user, session } = JSON.parse(saved);
    const client = await connected();
    const token = await client.resumeSession(user, session);
    enterChat(user, token);
  } catch {
    sessionStorage.removeItem(SAVED);
    state.client?.close();
    state.client = null;
    setStatus('Not connected', 'closed');
  }
}

// ---- wiring ------------------------------------------------------------------------

ui.loginForm.addEventListener('submit', (e) => {
  e.preventDefault();
  logIn(false);
});
ui.register.addEventListener('click', () => logIn(true));

ui.logout.addEventListener('click', async () => {
  try {
    await state.client?.logout();
  } catch {
    // Logged out or not, the page forgets the session.
  }
});

ui.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.text.value;
  if (!text.trim()) return;
  ui.text.value = '';
  send(text);
});

ui.text.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.newChat.addEventListener('submit', (e) => {
  e.preventDefault();
  const peer = ui.newPeer.value.trim().toLowerCase();
  if (!peer) return;
  ui.newPeer.value = '';
  openConversation(peer);
});

ui.earlier.addEventListener('click', () => {
  const c = conversation(state.current);
  loadHistory(state.current, c.oldest);
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state.me) {
    conversation(state.current).unread = 0;
    renderConversations();
  }
});

setStatus('Not connected', 'closed');
resumeSaved();
