// Shared by the page tests and the client tests: a moechat-server process on loopback
// ports (stopped by PID), Debian's Chromium through playwright-core, a Python client
// over TCP, and a screenshot folder per test.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '..', '..');
const SERVER = process.env.MOECHAT_SERVER ?? join(root, 'target', 'debug', 'moechat-server');
const PYTHON = process.env.MOECHAT_PYTHON ?? join(root, '.venv', 'bin', 'python');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT_MS = 15_000;

/** A fresh temporary folder, removed by the returned function. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts moechat-server with its store in `dir`; `port`/`httpPort` 0 (the default)
 * pick free ports. Resolves once both listeners are up, with their ports.
 */
export function startServer({ dir, port = 0, httpPort = 0, args = [] }) {
  const child = spawn(SERVER, [
    '--db', join(dir, 'moechat.db'),
    '--port', String(port),
    '--http', `127.0.0.1:${httpPort}`,
    '--log-level', 'info',
    ...args,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  return new Promise((resolvePorts, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`moechat-server did not start within ${WAIT_MS} ms:\n${log}`));
    }, WAIT_MS);
    const found = { tcp: null, http: null };
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      log += chunk;
      found.tcp ??= log.match(/listening on 127\.0\.0\.1:(\d+)/)?.[1] ?? null;
      found.http ??= log.match(/chat page on http:\/\/127\.0\.0\.1:(\d+)\//)?.[1] ?? null;
      if (found.tcp && found.http && timer) {
        clearTimeout(timer);
        const server = {
          pid: child.pid,
          port: Number(found.tcp),
          httpPort: Number(found.http),
          url: `http://127.0.0.1:${found.http}/`,
          wsUrl: `ws://127.0.0.1:${found.http}/ws`,
          log: () => log,
          stop: () => stop(child),
        };
        resolvePorts(server);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!found.tcp || !found.http) reject(new Error(`moechat-server exited with ${code}:\n${log}`));
    });
  });
}

/** SIGTERM to the PID, then SIGKILL if it has not exited within the grace period. */
function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    child.once('exit', () => {
      clearTimeout(kill);
      done();
    });
    process.kill(child.pid, 'SIGTERM');
  });
}

/** The flags every browser here runs with (Debian's Chromium, no sandbox as root). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * A browser context with a fresh profile folder (its --user-data-dir), and a function
 * that closes it and removes the folder.
 */
export async function browserContext(options = {}) {
  const { chromium } = await import('playwright-core');
  const profile = tempDir('moechat-profile-');
  const context = await chromium.launchPersistentContext(profile.dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 700 },
    ...options,
  });
  const errors = [];
  context.on('weberror', (e) => errors.push(String(e.error())));
  return {
    context,
    errors,
    close: async () => {
      await context.close();
      profile.remove();
    },
  };
}

/** The folder screenshots of `file`'s tests go to (web/test-results/<file>). */
export function outputDir(file) {
  const dir = join(root, 'web', 'test-results', file);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A file name from a test's name. */
export function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

/**
 * A Python client (the `moechat` package, over TCP) driven line by line: each call
 * writes one JSON command to tests/py_peer.py and resolves with its JSON answer.
 */
export function pythonPeer(port, user, password) {
  const child = spawn(PYTHON, [join(here, 'py_peer.py'), String(port), user, password], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c) => { stderr += c; });
  const lines = createInterface({ input: child.stdout });
  const answers = [];
  const waiting = [];
  lines.on('line', (line) => {
    const value = JSON.parse(line);
    if (waiting.length > 0) waiting.shift()(value);
    else answers.push(value);
  });
  const next = () => new Promise((resolveAnswer, reject) => {
    if (answers.length > 0) {
      resolveAnswer(answers.shift());
      return;
    }
    const timer = setTimeout(() => reject(new Error(`no answer from the Python peer:\n${stderr}`)), WAIT_MS);
    waiting.push((v) => {
      clearTimeout(timer);
      resolveAnswer(v);
    });
  });
  return {
    ready: next(),
    call: (command) => {
      child.stdin.write(`${JSON.stringify(command)}\n`);
      return next();
    },
    stop: () => {
      child.stdin.end();
      return new Promise((done) => {
        if (child.exitCode !== null) done();
        else child.once('exit', done);
      });
    },
  };
}
