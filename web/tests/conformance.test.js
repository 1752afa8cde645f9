// The JavaScript client (static/moechat.js) against every client script of
// conformance/client/, over WebSocket: `moechat-conformance play --ws` (built by cargo
// from tools/) plays the server's side, this driver the `app` steps. The script
// vocabulary is in conformance/README.md.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';
import WebSocket from 'ws';

import { Client, ConnectionClosed } from '../static/moechat.js';
import { root } from './helpers.js';

const PLAYER = process.env.MOECHAT_CONFORMANCE ?? join(root, 'target', 'debug', 'moechat-conformance');
const FOLDER = join(root, 'conformance', 'client');
const SCRIPTS = readdirSync(FOLDER).filter((f) => f.endsWith('.jsonl')).sort();
const WAIT_MS = 15_000;

function steps(file) {
  return readFileSync(join(FOLDER, file), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('//'))
    .map((l) => JSON.parse(l));
}

/** Equality, with "$any" matching anything (the scripts' app-side patterns). */
function matches(want, got) {
  if (want === '$any') return true;
  if (want === null || typeof want !== 'object') return want === got;
  if (Array.isArray(want)) {
    return Array.isArray(got) && want.length === got.length && want.every((w, i) => matches(w, got[i]));
  }
  if (got === null || typeof got !== 'object' || Array.isArray(got)) return false;
  const keys = Object.keys(want);
  return keys.length === Object.keys(got).length && keys.every((k) => k in got && matches(want[k], got[k]));
}

const errorJson = (e) => ({ closed: e instanceof ConnectionClosed, code: e.code ?? null });

/** Starts the fake server for `file`; resolves with its port and a promise of its exit. */
function player(file) {
  const child = spawn(PLAYER, ['play', '--ws', join(FOLDER, file)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c) => { stderr += c; });
  const exited = new Promise((resolve) => {
    child.on('exit', (code) => resolve({ code, stderr: () => stderr }));
  });
  const port = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      const m = line.match(/^listening on 127\.0\.0\.1:(\d+)$/);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`unexpected first line ${line}`));
    });
    child.on('exit', () => reject(new Error(`the player exited: ${stderr}`)));
  });
  return { port, exited, kill: () => child.kill('SIGKILL') };
}

async function drive(file, port) {
  let client = null;
  const calls = new Map();
  const start = (name, promise) => {
    calls.set(name, promise.then((value) => ({ ok: true, value }), (e) => ({ ok: false, value: errorJson(e) })));
  };
  for (const step of steps(file)) {
    if (!('app' in step)) continue;
    const name = step.as ?? step.app;
    const args = step.args ?? [];
    switch (step.app) {
      case 'connect':
        client = await Client.connect(`ws://127.0.0.1:${port}/ws`, { WebSocket, firstBackoff: 20 });
        break;
      case 'login':
        start(name, client.login(args[0], args[1]));
        break;
      case 'send':
        start(name, client.send(args[0], args[1]).then((r) => ({ msg_id: r.msg_id, stored: r.stored, duplicate: r.duplicate })));
        break;
      case 'broadcast':
        start(name, client.broadcast(args[0]).then((r) => ({ msg_id: r.msg_id, recipients: r.recipients, duplicate: r.duplicate })));
        break;
      case 'recv':
        start(name, client.recv(step.timeout_ms ?? null).then((m) => (m === null ? null : {
          msg_id: m.msg_id, from: m.sender, to: m.recipient, text: m.text, broadcast: m.kind === 'broadcast',
        })));
        break;
      case 'await': {
        const outcome = await Promise.race([
          calls.get(step.call),
          new Promise((_, reject) => { setTimeout(() => reject(new Error(`${step.call} did not finish`)), WAIT_MS); }),
        ]);
        calls.delete(step.call);
        const want = 'result' in step ? step.result : step.error;
        assert.equal(outcome.ok, 'result' in step, `${file}: ${JSON.stringify(step)} got ${JSON.stringify(outcome.value)}`);
        assert.ok(matches(want, outcome.value), `${file}: ${JSON.stringify(step)} got ${JSON.stringify(outcome.value)}`);
        break;
      }
      case 'sleep':
        await new Promise((r) => { setTimeout(r, step.ms); });
        break;
      case 'close':
        client?.close();
        break;
      default:
        throw new Error(`unknown app step ${step.app}`);
    }
  }
}

describe('the JavaScript client against the client scripts', () => {
  test('the fake server is built', () => {
    assert.ok(existsSync(PLAYER), `${PLAYER} is missing: cargo build -p moechat-tools`);
    assert.ok(SCRIPTS.length >= 9);
  });
  for (const file of SCRIPTS) {
    test(file, async () => {
      const p = player(file);
      try {
        await drive(file, await p.port);
        const { code, stderr } = await p.exited;
        assert.equal(code, 0, stderr());
      } finally {
        p.kill();
      }
    });
  }
});
