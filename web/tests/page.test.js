// The chat page end to end, in Debian's Chromium: pages chatting with each other and
// with a Python client over TCP, offline delivery, message text that stays text, a
// server restart, keyboard use on a phone-sized screen, and error messages. Every
// test saves a screenshot in web/test-results/page.test/.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { join } from 'node:path';

import { browserContext, outputDir, pythonPeer, slug, startServer, tempDir } from './helpers.js';

const SHOTS = outputDir('page.test');
const STEP_MS = 15_000;
/** The note under a broadcast once the server took it. */
const SENT = /nobody else is online|delivered to \d+ users? online/;

let store;
let server;
const opened = [];

before(async () => {
  store = tempDir('moechat-page-');
  server = await startServer({ dir: store.dir });
});

after(async () => {
  await server?.stop();
  store?.remove();
});

afterEach(async () => {
  for (const b of opened.splice(0)) await b.close();
});

/** A page of its own browser profile, open at the server's chat page. */
async function open(options) {
  const browser = await browserContext(options);
  opened.push(browser);
  const page = browser.context.pages()[0] ?? await browser.context.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.goto(server.url);
  return { page, errors: browser.errors };
}

async function shot(page, t, suffix = '') {
  await page.screenshot({ path: join(SHOTS, `${slug(t.name)}${suffix}.png`), fullPage: true });
}

async function enter(page, user, password, button = '#login') {
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.click(button);
  await page.locator('#status').filter({ hasText: `Connected as ${user}` }).waitFor();
}

const register = (page, user, password) => enter(page, user, password, '#register');

/** Opens the conversation with `key` from the sidebar. */
async function openChat(page, key) {
  await page.locator(`.conversation-button[data-key="${key}"]`).click();
  await page.locator('#title').filter({ hasText: key === '*' ? 'Everyone' : key }).waitFor();
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.keyboard.press('Enter');
}

/** Waits for a message whose text is exactly `text` in the open conversation. */
function message(page, text) {
  return page.locator('#messages .message .text').filter({ hasText: text }).first();
}

async function unread(page, key) {
  const badge = page.locator(`.conversation-button[data-key="${key}"] .unread`);
  return (await badge.count()) === 0 ? 0 : Number(await badge.textContent());
}

describe('the chat page', () => {
  test('two pages chat with each other and with a Python client over TCP', async (t) => {
    const alice = await open();
    const bob = await open();
    await register(alice.page, 'alice', 'wonderland');
    await register(bob.page, 'bob', 'builder');
    const carol = pythonPeer(server.port, 'carol', 'singer');
    assert.deepEqual(await carol.ready, { ready: true });
    try {
      // Page to page.
      await alice.page.locator('.conversation-button[data-key="bob"] .presence.online').waitFor();
      await openChat(alice.page, 'bob');
      await say(alice.page, 'hello bob, from a browser');
      await alice.page.locator('.message.mine .note').filter({ hasText: 'delivered' }).waitFor();
      await bob.page.locator('.conversation-button[data-key="alice"] .unread').waitFor();
      assert.equal(await unread(bob.page, 'alice'), 1);
      await openChat(bob.page, 'alice');
      await message(bob.page, 'hello bob, from a browser').waitFor();
      assert.equal(await unread(bob.page, 'alice'), 0);
      await say(bob.page, 'hi alice');
      await message(alice.page, 'hi alice').waitFor();

      // Python to page, and back.
      assert.deepEqual(await carol.call({ send: ['alice', 'hello from python'] }), {
        msg_id: (await carol.call({ send: ['alice', 'and again'] })).msg_id - 1,
        stored: false,
      });
      await alice.page.locator('.conversation-button[data-key="carol"] .unread').filter({ hasText: '2' }).waitFor();
      await openChat(alice.page, 'carol');
      await message(alice.page, 'hello from python').waitFor();
      await message(alice.page, 'and again').waitFor();
      await say(alice.page, 'hello carol, from a browser');
      assert.deepEqual(await carol.call({ recv: 10 }), {
        sender: 'alice', text: 'hello carol, from a browser', kind: 'direct',
      });
      await alice.page.locator('.message.mine .note').filter({ hasText: 'delivered' }).last().waitFor();
      await shot(alice.page, t, '-alice-with-carol');

      // A broadcast from the page reaches the other page and Python.
      await openChat(alice.page, '*');
      await say(alice.page, 'hello everyone');
      await alice.page.locator('.message.mine .note').filter({ hasText: 'delivered to 2 users online' }).waitFor();
      assert.deepEqual(await carol.call({ recv: 10 }), {
        sender: 'alice', text: 'hello everyone', kind: 'broadcast',
      });
      await openChat(bob.page, '*');
      await message(bob.page, 'hello everyone').waitFor();
      await shot(alice.page, t, '-alice');
      await shot(bob.page, t, '-bob');
      assert.deepEqual([...alice.errors, ...bob.errors], []);
    } finally {
      await carol.stop();
    }
  });

  test('a message sent to an offline user shows at their next login', async (t) => {
    const dave = await open();
    await register(dave.page, 'dave', 'diver');
    await dave.page.click('#logout');
    await dave.page.locator('#login-form').waitFor();

    const erin = await open();
    await register(erin.page, 'erin', 'engineer');
    await erin.page.fill('#new-peer', 'dave');
    await erin.page.keyboard.press('Enter');
    await say(erin.page, 'while you were out');
    await erin.page.locator('.note').filter({ hasText: 'stored: delivered when they log in' }).waitFor();

    await enter(dave.page, 'dave', 'diver');
    await dave.page.locator('#away').filter({ hasText: '1 message arrived while you were away' }).waitFor();
    await dave.page.locator('.conversation-button[data-key="erin"] .unread').filter({ hasText: '1' }).waitFor();
    await openChat(dave.page, 'erin');
    await message(dave.page, 'while you were out').waitFor();
    await shot(dave.page, t);
  });

  test('a script in a message renders as text', async (t) => {
    const mallory = await open();
    const frank = await open();
    await register(mallory.page, 'mallory', 'evil-one');
    await register(frank.page, 'frank', 'fine');
    const payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>';
    await mallory.page.fill('#new-peer', 'frank');
    await mallory.page.keyboard.press('Enter');
    await say(mallory.page, payload);
    await openChat(frank.page, 'mallory');
    const shown = message(frank.page, payload);
    await shown.waitFor();
    assert.equal(await shown.textContent(), payload);
    assert.equal(await frank.page.locator('#messages script, #messages img, #messages b').count(), 0);
    assert.equal(await frank.page.evaluate(() => window.__pwned), undefined);
    // The sender's own copy is text too.
    assert.equal(await mallory.page.evaluate(() => window.__pwned), undefined);
    await shot(frank.page, t);
  });

  test('the page reconnects after the server restarts, and goes on', async (t) => {
    const grace = await open();
    await register(grace.page, 'grace', 'hopper');
    await openChat(grace.page, '*');
    await say(grace.page, 'before the restart');
    await grace.page.locator('.note').filter({ hasText: SENT }).waitFor();

    const ports = { port: server.port, httpPort: server.httpPort };
    await server.stop();
    await grace.page.locator('#status').filter({ hasText: 'Reconnecting…' }).waitFor();
    await shot(grace.page, t, '-reconnecting');
    server = await startServer({ dir: store.dir, ...ports });
    await grace.page.locator('#status').filter({ hasText: 'Connected as grace' }).waitFor({ timeout: 30_000 });

    // The session resumed: the history is back, and sending goes on.
    await openChat(grace.page, '*');
    await message(grace.page, 'before the restart').waitFor();
    await say(grace.page, 'after the restart');
    await grace.page.locator('.message.mine .note').filter({ hasText: SENT }).nth(1).waitFor();
    await shot(grace.page, t);
  });

  test('works with the keyboard alone on a phone-sized screen', async (t) => {
    const ivan = await open({ viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true });
    const { page } = ivan;
    await page.focus('#user');
    await page.keyboard.type('ivan');
    await page.keyboard.press('Tab');
    await page.keyboard.type('terrible');
    // Tab to "Register" (after "Log in") and press it.
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'register');
    await page.keyboard.press('Enter');
    await page.locator('#status').filter({ hasText: 'Connected as ivan' }).waitFor();
    // The composer has focus after login; Enter sends.
    assert.equal(await page.evaluate(() => document.activeElement.id), 'text');
    await page.keyboard.type('typed, not clicked');
    await page.keyboard.press('Enter');
    await page.locator('.message.mine .note').filter({ hasText: SENT }).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
    await shot(page, t);
  });

  test('errors are said in words', async (t) => {
    const judy = await open();
    await register(judy.page, 'judy', 'justice');
    await judy.page.click('#logout');
    await judy.page.locator('#login-form').waitFor();
    await judy.page.fill('#user', 'judy');
    await judy.page.fill('#password', 'wrong');
    await judy.page.click('#login');
    await judy.page.locator('#alert').filter({ hasText: 'Wrong name or password.' }).waitFor();
    await judy.page.fill('#password', 'whatever');
    await judy.page.click('#register');
    await judy.page.locator('#alert').filter({ hasText: 'That name is taken.' }).waitFor();
    await judy.page.fill('#user', 'Not A Name!');
    await judy.page.click('#register');
    await judy.page.locator('#alert').filter({ hasText: 'Invalid name or password' }).waitFor();
    await shot(judy.page, t);

    // A newer login elsewhere signs this page out, and says why.
    await enter(judy.page, 'judy', 'justice');
    const other = await open();
    await enter(other.page, 'judy', 'justice');
    await judy.page.locator('#alert').filter({ hasText: 'You logged in somewhere else' }).waitFor();
    await shot(judy.page, t, '-taken-over');
  });
});
