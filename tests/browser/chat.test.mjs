// The chat sample in a real browser, through the real nginx.
//
// Starts the whole stack with scripts/chat (ws2fcgi, its managed php-fpm, and
// nginx) on a free port, drives Debian's chromium with playwright-core, and
// stops the stack at the end, failed or not. Run: node --test (see README.md).
//
// Each person is a separate browser context (own cookies), as two people on
// two machines would be.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { launchChromium } from './launch.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const runDir = path.join(repo, 'run/chat-browser'); // apart from a scripts/chat you may be running
// Generous: scripts/chat builds ws2fcgi first (cargo build --release).
const START_TIMEOUT_MS = Number(process.env.CHAT_START_TIMEOUT_MS ?? 600_000);
const STOP_TIMEOUT_MS = 40_000;
const STEP_TIMEOUT_MS = 10_000;
// chat.js's LEAVE_GRACE_MS: a "left" notice shows this long after the leave.
const LEAVE_GRACE_MS = 5000;
// ws2fcgi.js's longest backoff (chat.js: maxDelay): a reconnect attempt that
// was already under way when the page came back online may wait this long.
const MAX_RECONNECT_DELAY_MS = 10_000;
// What each room's channel keeps for a page that reconnects (CHAT_HISTORY_SIZE):
// small, so that a test can outrun it.
const HISTORY_SIZE = 8;
// A phone held upright: the narrowest width the page is made for.
const PHONE = { viewport: { width: 360, height: 640 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

const room = 'lobby'; // the run directory's history is removed first, so it starts empty
let stack; // { child, url, output(), exited }
let browser;
const pages = {}; // name -> { page, context, errors: [], dialogs: [] }
let failed = false; // print the servers' logs at the end

/** A test that flags a failure, for after(). The tests run in order and build on each other. */
function step(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (error) {
      failed = true;
      throw error;
    }
  });
}

/**
 * Runs scripts/chat in its own process group and waits for the URL it prints.
 * PORT=auto: the script picks a free port once its build is done (a port
 * picked here would stay unbound for the whole build, free for anyone to
 * take) and picks another if nginx loses it; the URL names the port.
 */
async function startStack() {
  const child = spawn(path.join(repo, 'scripts/chat'), [], {
    cwd: repo,
    env: { ...process.env, PORT: 'auto', CHAT_RUN_DIR: runDir, CHAT_HISTORY_SIZE: String(HISTORY_SIZE) },
    detached: true, // its own process group, so the whole of it can be signalled
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const started = { child, exited, output: () => output };
  stack = started; // stop it in after() even if it never comes up

  const live = /The chat is live at (http:\/\/127\.0\.0\.1:\d+\/)/;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!live.test(output)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`scripts/chat exited during start-up:\n${output}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`scripts/chat printed no URL within ${START_TIMEOUT_MS} ms:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  started.url = output.match(live)[1];
  console.log(`stack up at ${started.url} after ${((Date.now() - deadline + START_TIMEOUT_MS) / 1000).toFixed(1)} s (cargo build included)`);
  return started;
}

/** SIGTERM to the runner's group (its trap stops ws2fcgi and nginx), SIGKILL if it hangs. */
async function stopStack() {
  if (!stack || stack.child.exitCode !== null || stack.child.signalCode !== null) {
    return stack ? stack.exited : null;
  }
  try {
    process.kill(-stack.child.pid, 'SIGTERM');
  } catch {
    // already gone
  }
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS)));
  const result = await Promise.race([stack.exited, timeout]);
  clearTimeout(timer); // or node waits for it before exiting
  if (result === null) {
    try {
      process.kill(-stack.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    throw new Error(`scripts/chat did not stop within ${STOP_TIMEOUT_MS} ms`);
  }
  return result;
}

// A last resort if node itself is told to exit before after() ran.
process.once('exit', () => {
  if (stack && stack.child.exitCode === null && stack.child.signalCode === null) {
    try {
      process.kill(-stack.child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
});

/** A new person: own browser context (cookies), one page, errors and dialogs recorded. */
async function person(name, device = { viewport: { width: 920, height: 480 } }) {
  const context = await browser.newContext(device);
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const record = { page, context, errors: [], dialogs: [] };
  page.on('pageerror', (error) => record.errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') record.errors.push(`console: ${message.text()}`);
  });
  page.on('dialog', (dialog) => {
    record.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  pages[name] = record;
  return record;
}

function chatUrl(nick, inRoom = room) {
  return `${stack.url}?${new URLSearchParams({ room: inRoom, nick })}`;
}

async function waitConnected(page, timeout = STEP_TIMEOUT_MS) {
  await page.locator('#status[data-state="ok"]').waitFor({ timeout });
}

/** The nicknames in the "Here now" list, sorted. */
async function waitMembers(page, expected) {
  await page.waitForFunction(
    (want) => [...document.querySelectorAll('#members li')].map((li) => li.textContent).sort().join(',') === want,
    [...expected].sort().join(','),
    { timeout: STEP_TIMEOUT_MS },
  );
}

function message(page, nick, text) {
  return page.locator('#log li.msg').filter({ has: page.locator('.nick', { hasText: nick }) }).filter({ hasText: text });
}

function notice(page, text) {
  return page.locator('#log li.notice', { hasText: text });
}

/** One request to the stack's ws2fcgi control socket; its reply. */
function control(command) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(path.join(runDir, 'control.sock'));
    let reply = '';
    socket.setEncoding('utf8');
    socket.setTimeout(STEP_TIMEOUT_MS, () => socket.destroy(new Error(`no reply to ${JSON.stringify(command)}`)));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\n')) {
        socket.end();
        resolve(JSON.parse(reply));
      }
    });
    socket.on('error', reject);
    socket.write(`${JSON.stringify(command)}\n`);
  });
}

/**
 * Cuts a page off: its browser goes offline (so its reconnects fail, as on a
 * train in a tunnel) and ws2fcgi closes its connection with 1012, as a
 * restarting server would. Chromium's offline mode alone leaves an open
 * WebSocket open, so the close is what ends it. Waits until the page knows.
 */
async function cutOff(record, nick, inRoom) {
  await record.context.setOffline(true);
  const { members } = await control({ op: 'presence', channel: `room:${inRoom}` });
  const mine = members.filter((member) => member.meta.nick === nick);
  assert.equal(mine.length, 1, `${nick} has one connection in ${inRoom}`);
  const closed = await control({ op: 'close', conn: mine[0].id, code: 1012, reason: 'cut off by the test' });
  assert.equal(closed.closed, true, JSON.stringify(closed));
  await record.page.locator('#status[data-state="down"]').waitFor();
}

/** The texts of the messages on a page, in the order shown. */
function texts(page) {
  return page.locator('#log li.msg .text').allTextContents();
}

/** Nothing on the page is wider than the window (a phone would zoom out or scroll sideways). */
async function assertNoHorizontalOverflow(page) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  assert.ok(scrollWidth <= innerWidth, `the page is ${scrollWidth} px wide in a ${innerWidth} px window`);
}

/** The element is visible and wholly inside the window, not cut off or off-screen. */
async function assertOnScreen(page, selector) {
  const locator = page.locator(selector);
  assert.equal(await locator.isVisible(), true, `${selector} is not visible`);
  const box = await locator.boundingBox();
  const width = await page.evaluate(() => window.innerWidth);
  assert.ok(box.x >= 0 && box.x + box.width <= width, `${selector} is at x ${box.x}..${box.x + box.width}, the window is ${width} px`);
}

async function say(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

before(async () => {
  failed = true; // until the browser is up
  mkdirSync(runDir, { recursive: true });
  // A fresh history (the room starts empty) and no logs of an earlier run.
  for (const file of ['chat.sqlite', 'chat.sqlite-wal', 'chat.sqlite-shm', 'ws2fcgi.log', 'nginx-error.log']) {
    rmSync(path.join(runDir, file), { force: true });
  }
  await startStack();
  // launch() gives the browser a fresh, temporary user-data-dir of its own.
  browser = await launchChromium(chromium);
  failed = false;
});

after(async () => {
  await browser?.close().catch(() => {});
  const result = await stopStack();
  if (failed) {
    // Show what the servers said.
    console.error(`--- scripts/chat output\n${stack?.output() ?? ''}`);
    for (const log of ['ws2fcgi.log', 'nginx-error.log']) {
      try {
        console.error(`--- ${log}\n${readFileSync(path.join(runDir, log), 'utf8').split('\n').slice(-60).join('\n')}`);
      } catch {
        // not written
      }
    }
  }
  if (stack?.url) {
    // 143: scripts/chat's TERM trap stopped everything and found nothing left running.
    assert.equal(result?.code, 143, `scripts/chat did not stop cleanly: ${JSON.stringify(result)}\n${stack.output()}`);
  }
});

step('the page is served through nginx and the form enters a room', async () => {
  const { page } = await person('alice');
  await page.goto(stack.url);
  await page.locator('input[name=nick]').fill('alice');
  await page.locator('input[name=room]').fill(room);
  await page.locator('button[type=submit]').click();
  await page.waitForURL((url) => url.searchParams.get('nick') === 'alice');
  await waitConnected(page);
  await waitMembers(page, ['alice']);
  assert.equal(await page.locator('h1').textContent(), `#${room}`);
});

step('a second nickname joins: both see each other, alice sees the join notice', async () => {
  const { page: bob } = await person('bob');
  await bob.goto(chatUrl('bob'));
  await waitConnected(bob);
  await waitMembers(bob, ['alice', 'bob']);
  const alice = pages.alice.page;
  await waitMembers(alice, ['alice', 'bob']);
  await notice(alice, 'bob joined').waitFor();
});

step('a message typed in one page appears in the other', async () => {
  const alice = pages.alice.page;
  const bob = pages.bob.page;
  await say(alice, 'hi bob! this chat is plain PHP behind PHP-FPM');
  await message(bob, 'alice', 'hi bob! this chat is plain PHP behind PHP-FPM').waitFor();
  await say(bob, 'and every message I send is one FastCGI request');
  await message(alice, 'bob', 'and every message I send is one FastCGI request').waitFor();
  await say(alice, 'history is in SQLite, presence comes from ws2fcgi');
  await message(bob, 'alice', 'history is in SQLite, presence comes from ws2fcgi').waitFor();

  mkdirSync(path.join(repo, 'docs'), { recursive: true });
  // docs/chat.png (shown in the README) is refreshed only on request.
  const shot = process.env.UPDATE_SCREENSHOT ? path.join(repo, 'docs/chat.png') : path.join(runDir, 'chat.png');
  await alice.screenshot({ path: shot });
});

step('markup in a message is rendered as text, and runs nothing', async () => {
  const alice = pages.alice.page;
  const bob = pages.bob.page;
  const xss = '<script>alert(1)</script><img src=x onerror=alert(2)>';
  await say(bob, xss);
  const shown = message(alice, 'bob', '<script>');
  await shown.waitFor();
  assert.equal(await shown.locator('.text').textContent(), xss);
  assert.equal(await alice.locator('#log script, #log img').count(), 0, 'markup became elements');
  assert.deepEqual(pages.alice.dialogs, []);
  assert.deepEqual(pages.bob.dialogs, []);
});

step('a taken nickname is refused with a visible error', async () => {
  const { page } = await person('impostor');
  await page.goto(chatUrl('alice'));
  const banner = page.locator('#error');
  await banner.waitFor({ state: 'visible' });
  assert.match(await banner.textContent(), /nickname "alice" is taken in this room/i);
  assert.equal(await page.locator('#say button').isDisabled(), true);
  await page.locator('#error a', { hasText: 'Choose another nickname' }).waitFor();
  // The refused attempt never joined: alice's room still has two people.
  await waitMembers(pages.alice.page, ['alice', 'bob']);
  await pages.impostor.context.close();
});

step('a reload shows neither "bob left" nor "bob joined" to the others', async () => {
  const alice = pages.alice.page;
  const bob = pages.bob.page;
  const joined = await notice(alice, 'bob joined').count();
  await bob.reload();
  await waitConnected(bob);
  // bob's join notice went to the room before his message: once alice has the
  // message, she has handled the join (and the old connection's leave, unless
  // it comes later, when bob is present again and it means nothing).
  await say(bob, 'back after a reload');
  await message(alice, 'bob', 'back after a reload').waitFor();
  await waitMembers(alice, ['alice', 'bob']);
  assert.equal(await notice(alice, 'bob joined').count(), joined, 'a second "bob joined"');
  assert.equal(await notice(alice, 'bob left').count(), 0, '"bob left" (shown or pending) for a reload');
});

step('a second tab of bob takes over: the first says why and stops, alice sees no notice', async () => {
  const alice = pages.alice.page;
  const first = pages.bob.page;
  const joined = await notice(alice, 'bob joined').count();
  const second = await pages.bob.context.newPage(); // same browser, same cookie: the same person
  second.on('pageerror', (error) => pages.bob.errors.push(`pageerror: ${error.message}`));
  await second.goto(chatUrl('bob'));
  await waitConnected(second);
  await first.locator('#error', { hasText: 'opened in another window' }).waitFor();
  assert.equal(await first.locator('#status').getAttribute('data-state'), 'down');
  await say(second, 'from my second tab');
  await message(alice, 'bob', 'from my second tab').waitFor();
  await waitMembers(alice, ['alice', 'bob']);
  assert.equal(await notice(alice, 'bob joined').count(), joined, 'a second "bob joined"');
  assert.equal(await notice(alice, 'bob left').count(), 0, '"bob left" (shown or pending) for a takeover');
});

step('closing a page shows a leave notice in the other, after the grace', async () => {
  await pages.bob.context.close();
  const alice = pages.alice.page;
  await waitMembers(alice, ['alice']);
  await notice(alice, 'bob left').waitFor({ timeout: LEAVE_GRACE_MS + STEP_TIMEOUT_MS });
});

step('a reload shows the history, markup still as text', async () => {
  const alice = pages.alice.page;
  await alice.reload();
  await waitConnected(alice);
  await waitMembers(alice, ['alice']);
  for (const [nick, text] of [
    ['alice', 'hi bob! this chat is plain PHP behind PHP-FPM'],
    ['bob', 'and every message I send is one FastCGI request'],
    ['bob', '<script>alert(1)</script>'],
  ]) {
    assert.equal(await message(alice, nick, text).count(), 1, `history shows "${text}" once`);
  }
  assert.equal(await alice.locator('#log script, #log img').count(), 0);
  assert.deepEqual(pages.alice.dialogs, []);
});

step('on a 360 px phone: nothing overflows, status, Leave and people are on screen, an empty room says so', async () => {
  const phoneRoom = 'weekend-plans-2026';
  const { page: phone } = await person('phone', PHONE);
  await phone.goto(chatUrl('Maria Fernanda', phoneRoom));
  await waitConnected(phone);
  await waitMembers(phone, ['Maria Fernanda']);
  await phone.locator('#empty', { hasText: 'No messages' }).waitFor();
  await assertNoHorizontalOverflow(phone);
  for (const selector of ['#status', 'a.out', '#members', '#empty', '#text', '#say button']) {
    await assertOnScreen(phone, selector);
  }

  // The longest nickname there is, and a word longer than the screen.
  const long = 'a_very_long_nickname_for_phones_';
  const { page: desk } = await person('long');
  await desk.goto(chatUrl(long, phoneRoom));
  await waitConnected(desk);
  await waitMembers(phone, ['Maria Fernanda', long]);
  const word = 'x'.repeat(300);
  await say(desk, word);
  await message(phone, long, word).waitFor();
  assert.equal(await phone.locator('#empty').count(), 0, 'the empty-room hint stays after a message');
  await say(phone, 'typed on a phone');
  await message(desk, 'Maria Fernanda', 'typed on a phone').waitFor();
  await assertNoHorizontalOverflow(phone);
  for (const selector of ['#status', 'a.out', '#members', '#text']) {
    await assertOnScreen(phone, selector);
  }
  await phone.screenshot({ path: path.join(runDir, 'chat-phone.png') });
});

step('cut off while another posts, a page catches up from the channel history: each message once, in order, no reload', async () => {
  const inRoom = 'catch-up';
  const dana = await person('dana');
  await dana.page.goto(chatUrl('dana', inRoom));
  await waitConnected(dana.page);
  const { page: eve } = await person('eve');
  await eve.goto(chatUrl('eve', inRoom));
  await waitConnected(eve);
  await waitMembers(dana.page, ['dana', 'eve']);
  await say(eve, 'before the cut');
  await message(dana.page, 'eve', 'before the cut').waitFor();
  await dana.page.evaluate(() => (window.sameDocument = true)); // gone if the page reloads

  await cutOff(dana, 'dana', inRoom);
  const missed = Array.from({ length: HISTORY_SIZE - 2 }, (_, i) => `while dana was away ${i + 1}`);
  for (const text of missed) {
    await say(eve, text);
    await message(eve, 'eve', text).waitFor(); // published: dana's page missed it
  }
  assert.equal(await message(dana.page, 'eve', missed[0]).count(), 0, 'dana was not cut off');
  await dana.context.setOffline(false); // ws2fcgi.js reconnects at once ("online")

  await waitConnected(dana.page, MAX_RECONNECT_DELAY_MS + STEP_TIMEOUT_MS);
  await message(dana.page, 'eve', missed.at(-1)).waitFor();
  assert.deepEqual(await texts(dana.page), ['before the cut', ...missed]);
  assert.equal(await dana.page.locator('#status').getAttribute('data-recovered'), 'true', 'caught up from the channel history');
  assert.equal(await dana.page.evaluate(() => window.sameDocument), true, 'the page was reloaded');
  await say(dana.page, 'back');
  await message(eve, 'dana', 'back').waitFor();
});

step('when the history no longer covers the gap, the page is told and reloads what it missed from SQLite', async () => {
  const inRoom = 'catch-up';
  const dana = pages.dana;
  const eve = pages.eve.page;
  const before = await texts(dana.page);

  await cutOff(dana, 'dana', inRoom);
  // More than the channel keeps: the oldest of these are gone from its history.
  const missed = Array.from({ length: HISTORY_SIZE + 2 }, (_, i) => `too many while away ${i + 1}`);
  for (const text of missed) {
    await say(eve, text);
    await message(eve, 'eve', text).waitFor();
  }
  await dana.context.setOffline(false);

  await waitConnected(dana.page, MAX_RECONNECT_DELAY_MS + STEP_TIMEOUT_MS);
  await message(dana.page, 'eve', missed.at(-1)).waitFor();
  assert.deepEqual(await texts(dana.page), [...before, ...missed]);
  assert.equal(await dana.page.locator('#status').getAttribute('data-recovered'), 'false', 'the channel was not lost');
  assert.equal(await dana.page.evaluate(() => window.sameDocument), true, 'the page was reloaded');
});

step('no script errors in the pages that were accepted', () => {
  for (const name of ['alice', 'bob', 'phone', 'long', 'eve']) {
    assert.deepEqual(pages[name]?.errors, [], `${name}'s page`);
  }
  // dana was offline on purpose: chromium logs each failed attempt, and nothing else.
  const offline = /ERR_INTERNET_DISCONNECTED/;
  assert.deepEqual(pages.dana.errors.filter((error) => !offline.test(error)), [], "dana's page");
});
