// MoeChat's protocol client for JavaScript: the wire protocol (PROTOCOL.md) over a
// WebSocket, one frame per text message. It owns requests and their answers, the
// heartbeat, at-least-once delivery with acks and dropping repeats, nonces on every
// send, and reconnecting with the session token after a drop or a server restart.
// It has no DOM code: the chat page (app.js) uses it, and the tests drive it from
// Node.js with the `ws` package passed as `WebSocket`.
//
// Names follow the Python client where they fit: register, login, users, send,
// broadcast, history, recv, ping, logout, close; messages and receipts carry
// msg_id, kind, sender, recipient, text, ts / msg_id, stored, recipients, duplicate.

/** Protocol codes by name (PROTOCOL.md section 4). */
export const Code = Object.freeze({
  HEARTBEAT: 0,
  LOGIN_OK: 10,
  BAD_CREDENTIALS: 20,
  LOGIN_MALFORMED: 21,
  TOO_MANY_ATTEMPTS: 22,
  ALREADY_LOGGED_IN: 23,
  BUSY: 24,
  QUERY_OK: 30,
  UNKNOWN_REQUEST: 40,
  NOT_LOGGED_IN: 41,
  BAD_ARGUMENTS: 42,
  NAME_TAKEN: 43,
  REGISTRATION_CLOSED: 44,
  DELIVERED: 50,
  STORED: 51,
  INTERNAL: 60,
  FRAME_TOO_LONG: 61,
  MALFORMED_FRAME: 62,
  BAD_ENVELOPE: 63,
  TAKEN_OVER: 64,
  SHUTTING_DOWN: 65,
  HEARTBEAT_TIMEOUT: 66,
  SLOW_CONSUMER: 67,
  SERVER_FULL: 68,
  MESSAGE_NOT_LOGGED_IN: 70,
  NO_SUCH_USER: 71,
  MALFORMED_MESSAGE: 72,
  BAD_TEXT: 73,
  RATE_LIMITED: 74,
  QUOTA_FULL: 75,
  DIRECT: 80,
  BROADCAST: 90,
});

const DESCRIPTIONS = new Map([
  [Code.BAD_CREDENTIALS, 'Wrong name or password.'],
  [Code.LOGIN_MALFORMED, 'That name or password is not valid.'],
  [Code.TOO_MANY_ATTEMPTS, 'Too many failed logins. Wait a while before trying again.'],
  [Code.ALREADY_LOGGED_IN, 'This connection is already logged in.'],
  [Code.BUSY, 'The server is busy checking passwords. Try again in a moment.'],
  [Code.UNKNOWN_REQUEST, 'The server does not know that request.'],
  [Code.NOT_LOGGED_IN, 'Log in first.'],
  [Code.BAD_ARGUMENTS, 'Invalid name or password: names are 1–32 characters from a–z, 0–9, _ . - and passwords 1–1024 bytes.'],
  [Code.NAME_TAKEN, 'That name is taken.'],
  [Code.REGISTRATION_CLOSED, 'Registration is closed on this server.'],
  [Code.INTERNAL, 'The server had an internal error; the request had no effect. Try again.'],
  [Code.FRAME_TOO_LONG, 'That was too long for the server, which closed the connection.'],
  [Code.MALFORMED_FRAME, 'The server could not read a frame.'],
  [Code.BAD_ENVELOPE, 'The server refused a malformed frame.'],
  [Code.TAKEN_OVER, 'You logged in somewhere else, so this page was signed out.'],
  [Code.SHUTTING_DOWN, 'The server is restarting.'],
  [Code.HEARTBEAT_TIMEOUT, 'The connection went quiet for too long.'],
  [Code.SLOW_CONSUMER, 'This page fell behind on incoming messages; they are kept for you.'],
  [Code.SERVER_FULL, 'The server is full. Trying again shortly.'],
  [Code.MESSAGE_NOT_LOGGED_IN, 'Log in before sending messages.'],
  [Code.NO_SUCH_USER, 'There is no such user.'],
  [Code.MALFORMED_MESSAGE, 'The server refused a malformed message.'],
  [Code.BAD_TEXT, 'A message must have text, and not too much of it.'],
  [Code.RATE_LIMITED, 'You are sending too fast. Wait a moment.'],
  [Code.QUOTA_FULL, 'That user has too many unread messages waiting. Try again later.'],
]);

/** A sentence for a user, for any error code the protocol defines. */
export function describe(code) {
  return DESCRIPTIONS.get(code) ?? `The server answered with code ${code}.`;
}

/** A refusal from the server (`code`, its `reason` sentence) or a local failure (`code` null). */
export class MoeChatError extends Error {
  constructor(message, { code = null, status = null, reason = null } = {}) {
    super(message);
    this.name = 'MoeChatError';
    this.code = code;
    this.status = status;
    this.reason = reason;
  }
}

/** A login refused (codes 20–24). */
export class LoginError extends MoeChatError {
  constructor(...args) {
    super(...args);
    this.name = 'LoginError';
  }
}

/** The connection ended for good (closed by the client, logged out or taken over). */
export class ConnectionClosed extends MoeChatError {
  constructor(...args) {
    super(...args);
    this.name = 'ConnectionClosed';
  }
}

/** The URL of the `/ws` endpoint of the page's own server. */
export function pageUrl(location = globalThis.location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

const DEFAULTS = Object.freeze({
  timeout: 30_000,
  reconnect: true,
  acks: true,
  firstBackoff: 250,
  maxBackoff: 5_000,
  busyRetryFor: 30_000,
  queueLimit: 1_000,
});

/** Direct msg_ids remembered for dropping repeats (re-pushes after a reconnect). */
const SEEN_LIMIT = 10_000;

function randomNonce() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (ms) => ms / 2 + Math.random() * (ms / 2);

/**
 * A MoeChat connection over WebSocket.
 *
 * Events (an EventTarget): `message` (detail: a message, after it counts as taken),
 * `state` (detail: {state, code, reason}: 'connecting', 'connected' (not logged in),
 * 'online' (logged in), 'reconnecting', 'closed'), `resumed` (detail: {user}) after a
 * reconnect logged back in.
 */
export class Client extends EventTarget {
  /** Opens a client and waits for its first connection. */
  static async connect(url, options = {}) {
    const client = new Client(url, options);
    await client.connect();
    return client;
  }

  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new MoeChatError('no WebSocket implementation: pass options.WebSocket');
    this.state = 'idle';
    this.user = null;
    this.session = null;
    this.ws = null;
    this.nextId = 1;
    // id -> {frame, resolve, reject, timer, kind}; kept in order, re-sent after a resume.
    this.pending = new Map();
    this.inbox = [];
    this.waiters = [];
    this.seen = new Set();
    this.acked = 0;
    this.closeReason = null;
    this.attempt = 0;
  }

  /** Connects (once); resolves when the WebSocket is open. */
  async connect() {
    if (this.state !== 'idle') return;
    this.setState('connecting');
    await this.open();
    this.setState('connected');
  }

  open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WebSocket(this.url);
      } catch (e) {
        reject(new MoeChatError(`cannot open ${this.url}: ${e.message}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.attempt = 0;
        resolve();
      };
      ws.onmessage = (event) => this.onFrame(event.data);
      ws.onclose = (event) => {
        if (!opened) {
          reject(new MoeChatError(`cannot connect to ${this.url}`, { code: null, reason: event.reason }));
        }
        this.onDrop(ws);
      };
      ws.onerror = () => {}; // followed by close, which says what happened
    });
  }

  setState(state, code = null, reason = null) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, code, reason } }));
  }

  write(frame) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Sends a `q`/`m` frame and resolves with the frame that answers it. */
  request(frame, { kind = 'plain', timeout = this.options.timeout } = {}) {
    if (this.state === 'closed') {
      return Promise.reject(new ConnectionClosed(this.closeReason ?? 'the connection is closed'));
    }
    if (this.pending.size >= this.options.queueLimit) {
      return Promise.reject(new MoeChatError('too many requests waiting for an answer'));
    }
    const id = this.nextId++;
    const sent = { ...frame, id };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new MoeChatError(`no answer within ${timeout / 1000} s`));
      }, timeout);
      this.pending.set(id, { frame: sent, resolve, reject, timer, kind });
      // While reconnecting, requests wait to be sent after the resume.
      if (this.state === 'online' || this.state === 'connected' || kind === 'login') {
        this.write(sent);
      }
    });
  }

  onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the server only sends JSON; nothing to answer
    }
    if (frame === null || typeof frame !== 'object') return;
    const { status, status_code: code, info = {}, id } = frame;
    if (status === 'm') {
      this.onPush(code, info);
      return;
    }
    if (status === 'q' && code === Code.HEARTBEAT) {
      this.write({ status: 'r', status_code: Code.QUERY_OK, info: { req: 'pong' } });
      return;
    }
    if (id !== undefined && this.pending.has(id)) {
      const p = this.pending.get(id);
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve(frame);
      return;
    }
    if (status === 'e') this.onClosing(code, info.error);
  }

  onPush(code, info) {
    const direct = code === Code.DIRECT;
    const message = Object.freeze({
      msg_id: info.msg_id,
      kind: direct ? 'direct' : 'broadcast',
      sender: info.from,
      recipient: direct ? info.to : null,
      text: info.text,
      ts: info.ts,
    });
    if (direct) {
      // Repeats come after a reconnect (pushed, not yet acked): the app sees each once.
      if (this.seen.has(message.msg_id) || message.msg_id <= this.acked) {
        // Taken and acknowledged before, but the server has not seen the ack (it was
        // lost with a connection): say it again. A repeat of one not yet taken waits
        // for the original to be taken.
        if (message.msg_id <= this.acked && this.options.acks) {
          this.write({ status: 'r', status_code: Code.DELIVERED, info: { ack: this.acked } });
        }
        return;
      }
      this.seen.add(message.msg_id);
      if (this.seen.size > SEEN_LIMIT) {
        this.seen.delete(this.seen.values().next().value);
      }
    }
    if (this.waiters.length > 0) {
      this.waiters.shift()(message);
      this.taken(message);
    } else if (this.listenerCount > 0) {
      this.taken(message);
    } else {
      this.inbox.push(message);
    }
  }

  /** The message has reached the application: dispatch it and acknowledge it. */
  taken(message) {
    this.dispatchEvent(new CustomEvent('message', { detail: message }));
    if (message.kind === 'direct') this.ack(message.msg_id);
  }

  ack(msgId) {
    if (!this.options.acks || msgId <= this.acked) return;
    this.acked = msgId;
    this.write({ status: 'r', status_code: Code.DELIVERED, info: { ack: msgId } });
  }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type === 'message') {
      this.listenerCount = (this.listenerCount ?? 0) + 1;
      // Messages that came before anyone listened are handed over now.
      const waiting = this.inbox.splice(0);
      queueMicrotask(() => waiting.forEach((m) => this.taken(m)));
    }
  }

  removeEventListener(type, listener, options) {
    super.removeEventListener(type, listener, options);
    if (type === 'message' && this.listenerCount > 0) this.listenerCount -= 1;
  }

  /** The next pushed message; `null` if `timeout` ms pass first; rejects once closed. */
  recv(timeout = null) {
    if (this.inbox.length > 0) {
      const message = this.inbox.shift();
      this.taken(message);
      return Promise.resolve(message);
    }
    if (this.state === 'closed') {
      return Promise.reject(new ConnectionClosed(this.closeReason ?? 'the connection is closed'));
    }
    return new Promise((resolve, reject) => {
      const waiter = (m) => {
        if (timer) clearTimeout(timer);
        if (m instanceof Error) reject(m);
        else resolve(m);
      };
      const timer = timeout === null ? null : setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(null);
      }, timeout);
      this.waiters.push(waiter);
    });
  }

  /** An `e` frame with no id: the server is closing the connection with `code`. */
  onClosing(code, reason) {
    this.lastClose = { code, reason };
  }

  onDrop(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    const last = this.lastClose ?? { code: null, reason: 'the connection dropped' };
    this.lastClose = null;
    // Already reconnecting: its loop sees the failed attempt and goes on.
    if (this.state === 'closed' || this.state === 'reconnecting') return;
    const final = last.code === Code.TAKEN_OVER || this.loggedOut || !this.options.reconnect;
    if (final || (this.user === null && this.state !== 'online')) {
      this.finish(last.code, last.reason ?? 'the connection closed');
      return;
    }
    this.setState('reconnecting', last.code, last.reason);
    this.reconnect();
  }

  async reconnect() {
    while (this.state === 'reconnecting') {
      const wait = Math.min(this.options.maxBackoff, this.options.firstBackoff * 2 ** this.attempt);
      this.attempt += 1;
      await sleep(jitter(wait));
      if (this.state !== 'reconnecting') return;
      try {
        await this.open();
      } catch {
        continue;
      }
      if (this.session === null) {
        this.setState('connected');
        this.flush();
        return;
      }
      const resumed = await this.resume();
      if (resumed) return;
    }
  }

  async resume() {
    const frame = {
      status: 'q',
      status_code: 0,
      info: { req: 'login', user: this.user, session: this.session, acks: this.options.acks },
    };
    let answer;
    try {
      answer = await this.request(frame, { kind: 'login', timeout: this.options.timeout });
    } catch {
      return false; // dropped again: the loop goes on
    }
    if (answer.status_code === Code.LOGIN_OK) {
      this.setState('online');
      this.dispatchEvent(new CustomEvent('resumed', { detail: { user: this.user } }));
      this.flush();
      return true;
    }
    if (answer.status_code === Code.BUSY) {
      this.ws?.close();
      return false;
    }
    // The token was refused (expired, or logged out elsewhere): only a new login helps.
    this.finish(answer.status_code, answer.info?.error ?? describe(answer.status_code));
    return true;
  }

  /** Re-sends every request still unanswered, in order (sends keep their nonce). */
  flush() {
    for (const p of this.pending.values()) {
      if (p.kind !== 'login') this.write(p.frame);
    }
  }

  finish(code, reason) {
    if (this.state === 'closed') return;
    this.closeReason = reason;
    this.setState('closed', code, reason);
    const error = new ConnectionClosed(reason, { code, reason });
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    for (const w of this.waiters.splice(0)) w(error);
    if (this.ws) this.ws.close();
  }

  async query(info, kind = 'plain') {
    const answer = await this.request({ status: 'q', status_code: 0, info }, { kind });
    if (answer.status_code !== Code.QUERY_OK) throw refusal(answer, MoeChatError);
    return answer.info;
  }

  /** Creates a user; `MoeChatError` with code 43 if taken, 44 if registration is closed. */
  async register(user, password) {
    await this.query({ req: 'register', user, password }, 'register');
  }

  /** Logs in (asking for acks unless `options.acks` is false); resolves with the session token. */
  async login(user, password) {
    return this.loginWith({ req: 'login', user, password, acks: this.options.acks });
  }

  /** Logs in again with a token from an earlier login (a page reload). */
  async resumeSession(user, session) {
    return this.loginWith({ req: 'login', user, session, acks: this.options.acks });
  }

  async loginWith(info) {
    const deadline = Date.now() + this.options.busyRetryFor;
    let backoff = 50;
    for (;;) {
      const answer = await this.request({ status: 'q', status_code: 0, info }, { kind: 'login' });
      if (answer.status_code === Code.LOGIN_OK) {
        this.user = answer.info.user;
        this.session = answer.info.session;
        this.setState('online');
        this.flush();
        return this.session;
      }
      if (answer.status_code === Code.BUSY && Date.now() + backoff < deadline) {
        await sleep(jitter(backoff));
        backoff = Math.min(backoff * 2, 1_000);
        continue;
      }
      throw refusal(answer, LoginError);
    }
  }

  /** Online users, sorted. */
  async users() {
    return (await this.query({ req: 'users' })).users;
  }

  /** Round-trip time to the server, ms. */
  async ping() {
    const started = Date.now();
    await this.query({ req: 'ping' }, 'ping');
    return Date.now() - started;
  }

  /** Stored messages with `withUser` (`'*'` for broadcasts), oldest first. */
  async history(withUser, { limit = 50, before = null } = {}) {
    const info = { req: 'history', with: withUser, limit };
    if (before !== null) info.before = before;
    return (await this.query(info)).messages.map((m) => Object.freeze({
      msg_id: m.msg_id,
      kind: m.to === undefined ? 'broadcast' : 'direct',
      sender: m.from,
      recipient: m.to ?? null,
      text: m.text,
      ts: m.ts,
    }));
  }

  async message(code, info) {
    // The nonce makes a re-send after a reconnect safe: the server stores it once.
    const frame = { status: 'm', status_code: code, info: { ...info, nonce: randomNonce() } };
    const answer = await this.request(frame);
    if (answer.status_code !== Code.DELIVERED && answer.status_code !== Code.STORED) {
      throw refusal(answer, MoeChatError);
    }
    return Object.freeze({
      msg_id: answer.info.msg_id,
      stored: answer.status_code === Code.STORED,
      recipients: answer.info.recipients ?? null,
      duplicate: answer.info.duplicate === true,
    });
  }

  /** Sends a direct message; the receipt says whether it was stored for an offline user. */
  send(to, text) {
    return this.message(Code.DIRECT, { to, text });
  }

  /** Sends to every online user but yourself. */
  broadcast(text) {
    return this.message(Code.BROADCAST, { text });
  }

  /** Ends the session (the token is void) and closes. */
  async logout() {
    this.loggedOut = true;
    try {
      await this.query({ req: 'logout' });
    } finally {
      this.finish(null, 'logged out');
    }
  }

  /** Closes the connection; idempotent. */
  close() {
    this.finish(null, 'closed by the client');
  }

  get closed() {
    return this.state === 'closed';
  }
}

function refusal(answer, Kind) {
  const code = answer.status_code;
  const reason = answer.info?.error ?? null;
  return new Kind(describe(code), { code, status: answer.status, reason });
}
