// The protocol client module (web/static/moechat.js) on its own, in Node.js against a
// real moechat-server over WebSocket, with the `ws` package as its WebSocket: requests
// and receipts, errors by code, acks and repeats dropped after a reconnect, a send
// re-sent with its nonce after its receipt was lost, the heartbeat, and takeover.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { Client, Code, ConnectionClosed, LoginError, MoeChatError, describe as say } from '../static/moechat.js';
import { startServer, tempDir } from './helpers.js';

let store;
let server;

before(async () => {
  store = tempDir('moechat-client-');
  server = await startServer({ dir: store.dir, args: ['--heartbeat', '0.5'] });
});

after(async () => {
  await server?.stop();
  store?.remove();
});

/**
 * A WebSocket whose incoming frames can be lost on purpose (`Lossy.deaf`), as when a
 * network drops a receipt on its way back.
 */
class Lossy extends WebSocket {
  static deaf = false;

  static sent = [];

  set onmessage(handler) {
    super.onmessage = (event) => {
      if (!Lossy.deaf) handler(event);
    };
  }

  get onmessage() {
    return super.onmessage;
  }

  send(data, ...rest) {
    Lossy.sent.push(JSON.parse(data));
    super.send(data, ...rest);
  }
}

let users = 0;

/** A logged-in client of a fresh user. */
async function user(name, options = {}) {
  users += 1;
  const unique = `${name}${users}`;
  const client = await Client.connect(server.wsUrl, { WebSocket, firstBackoff: 20, ...options });
  await client.register(unique, 'secret');
  await client.login(unique, 'secret');
  return { client, name: unique };
}

describe('the JavaScript client', () => {
  test('sends, receives, lists users and pages through history', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const r = await alice.client.send(bob.name, 'hi bob');
    assert.equal(r.stored, false);
    assert.equal(r.duplicate, false);
    assert.equal(r.recipients, null);
    const m = await bob.client.recv(10_000);
    assert.deepEqual(
      { msg_id: m.msg_id, kind: m.kind, sender: m.sender, recipient: m.recipient, text: m.text },
      { msg_id: r.msg_id, kind: 'direct', sender: alice.name, recipient: bob.name, text: 'hi bob' },
    );
    assert.equal(typeof m.ts, 'number');

    const all = await alice.client.users();
    assert.ok(all.includes(alice.name) && all.includes(bob.name));
    assert.deepEqual(all, [...all].sort());

    for (let i = 0; i < 4; i += 1) await alice.client.send(bob.name, `n${i}`);
    const last = await alice.client.history(bob.name, { limit: 2 });
    assert.deepEqual(last.map((h) => h.text), ['n2', 'n3']);
    const earlier = await alice.client.history(bob.name, { limit: 10, before: last[0].msg_id });
    assert.deepEqual(earlier.map((h) => h.text), ['hi bob', 'n0', 'n1']);

    const b = await alice.client.broadcast('to all');
    assert.ok(b.recipients >= 1);
    alice.client.close();
    bob.client.close();
  });

  test('refusals are errors with their code and a sentence', async () => {
    const client = await Client.connect(server.wsUrl, { WebSocket });
    await assert.rejects(client.login('nobody-at-all', 'x'), (e) => {
      assert.ok(e instanceof LoginError);
      assert.equal(e.code, Code.BAD_CREDENTIALS);
      assert.equal(e.message, 'Wrong name or password.');
      return true;
    });
    const taken = await user('taken');
    await assert.rejects(client.register(taken.name, 'again'), (e) => {
      assert.ok(e instanceof MoeChatError);
      assert.equal(e.code, Code.NAME_TAKEN);
      return true;
    });
    await client.login(taken.name, 'secret');
    await assert.rejects(client.send('no-such-user-here', 'hello?'), (e) => e.code === Code.NO_SUCH_USER);
    await assert.rejects(client.send(taken.name, ''), (e) => e.code === Code.BAD_TEXT);
    client.close();
    await assert.rejects(client.users(), ConnectionClosed);
  });

  test('every error code has a sentence of its own', () => {
    const generic = say(999);
    for (const [name, code] of Object.entries(Code)) {
      if (code >= 20 && code < 80 && code !== Code.QUERY_OK && code !== Code.DELIVERED && code !== Code.STORED) {
        assert.notEqual(say(code), generic, `${name} (${code}) has no sentence`);
      }
    }
  });

  test('messages not taken before a drop come again after the resume, once each', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    for (const text of ['one', 'two', 'three']) await alice.client.send(bob.name, text);
    // Wait until the pushes reached bob's client, untaken (nobody has called recv).
    while (bob.client.inbox.length < 3) await new Promise((r) => { setTimeout(r, 10); });
    const states = [];
    bob.client.addEventListener('state', (e) => states.push(e.detail.state));
    const resumed = new Promise((r) => { bob.client.addEventListener('resumed', r, { once: true }); });
    bob.client.ws.terminate();
    await resumed;
    assert.deepEqual(states, ['reconnecting', 'online']);
    const got = [];
    for (;;) {
      const m = await bob.client.recv(500);
      if (m === null) break;
      got.push(m.text);
    }
    assert.deepEqual(got, ['one', 'two', 'three']);
    alice.client.close();
    bob.client.close();
  });

  test('a send whose receipt was lost is sent again with its nonce, and stored once', async () => {
    const alice = await user('alice', { WebSocket: Lossy });
    const bob = await user('bob');
    Lossy.sent = [];
    Lossy.deaf = true;
    const receipt = alice.client.send(bob.name, 'exactly once');
    const delivered = await bob.client.recv(10_000);
    // The server stored and delivered it; its receipt is lost with the connection.
    alice.client.ws.terminate();
    Lossy.deaf = false;
    const r = await receipt;
    assert.equal(r.msg_id, delivered.msg_id);
    assert.equal(r.duplicate, true);
    const sends = Lossy.sent.filter((f) => f.status === 'm');
    assert.equal(sends.length, 2);
    assert.equal(sends[0].info.nonce, sends[1].info.nonce);
    assert.match(sends[0].info.nonce, /^[0-9a-f]{24}$/);
    assert.equal(await bob.client.recv(500), null, 'no second copy');
    alice.client.close();
    bob.client.close();
  });

  test('answers the heartbeat by itself', async () => {
    const alice = await user('alice');
    // The server pings after 0.5 s of silence and closes after 1 s more.
    await new Promise((r) => { setTimeout(r, 2_000); });
    assert.equal(alice.client.state, 'online');
    assert.ok((await alice.client.ping()) >= 0);
    alice.client.close();
  });

  test('a newer login elsewhere closes this one with 64, and recv says so', async () => {
    const first = await user('alice');
    const closed = new Promise((r) => {
      first.client.addEventListener('state', (e) => { if (e.detail.state === 'closed') r(e.detail); });
    });
    const waiting = first.client.recv();
    const second = await Client.connect(server.wsUrl, { WebSocket });
    await second.login(first.name, 'secret');
    const detail = await closed;
    assert.equal(detail.code, Code.TAKEN_OVER);
    await assert.rejects(waiting, ConnectionClosed);
    second.close();
  });
});
