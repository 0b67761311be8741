// The Laravel example (php-example/laravel) in a real browser, through nginx.
//
// Starts scripts/laravel (ws2fcgi with its Pusher app and managed php-fpm,
// nginx, Laravel 8 from Debian's packages) on a free port, drives Debian's
// chromium with playwright-core, and stops the stack at the end, failed or
// not. Each person is a browser context of their own (cookies), logged in
// through the login form. Laravel Echo and pusher-js run unchanged in the page.
//
// LARAVEL_CHANNEL_AUTH picks how channels are authorized (scripts/laravel):
// php (the default: ws2fcgi asks ws.php, the page makes no request for it)
// or endpoint (Echo asks /broadcasting/auth for Pusher's signatures).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { launchChromium } from './launch.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const runDir = path.join(repo, 'run/laravel-browser'); // apart from a scripts/laravel you may be running
const START_TIMEOUT_MS = Number(process.env.LARAVEL_START_TIMEOUT_MS ?? 600_000); // it may build ws2fcgi
const STOP_TIMEOUT_MS = 40_000;
const STEP_TIMEOUT_MS = 15_000;
const CHANNEL_AUTH = process.env.LARAVEL_CHANNEL_AUTH ?? 'php';

let stack; // { child, url, output(), exited }
let browser;
const people = {}; // name -> { page, context, errors: [] }
let failed = false;

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

/** scripts/laravel in its own process group; waits for the URL it prints (PORT=auto). */
async function startStack() {
  const child = spawn(path.join(repo, 'scripts/laravel'), [], {
    cwd: repo,
    env: { ...process.env, PORT: 'auto', LARAVEL_RUN_DIR: runDir, LARAVEL_CHANNEL_AUTH: CHANNEL_AUTH },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  stack = { child, exited, output: () => output };

  const live = /The Laravel example is live at (http:\/\/127\.0\.0\.1:\d+\/)/;
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!live.test(output)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`scripts/laravel exited during start-up:\n${output}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`scripts/laravel printed no URL within ${START_TIMEOUT_MS} ms:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  stack.url = output.match(live)[1];
}

/** SIGTERM to the script's group (its trap stops ws2fcgi and nginx), SIGKILL if it hangs. */
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
  clearTimeout(timer);
  if (result === null) {
    try {
      process.kill(-stack.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    throw new Error(`scripts/laravel did not stop within ${STOP_TIMEOUT_MS} ms`);
  }
  return result;
}

process.once('exit', () => {
  if (stack && stack.child.exitCode === null && stack.child.signalCode === null) {
    try {
      process.kill(-stack.child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
});

/** A person logged in through the form, on the lobby's page, connected. */
async function login(name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 600 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const record = { page, context, errors: [], authRequests: 0 };
  page.on('pageerror', (error) => record.errors.push(`pageerror: ${error.message}`));
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/broadcasting/auth') record.authRequests += 1;
  });
  page.on('console', (message) => {
    if (message.type() === 'error') record.errors.push(`console: ${message.text()}`);
  });
  await page.goto(`${stack.url}login`);
  await page.locator('input[name=email]').fill(`${name}@example.com`);
  await page.locator('input[name=password]').fill('secret');
  await page.locator('#login button[type=submit]').click();
  await page.waitForURL(/\/rooms\/lobby$/);
  await page.locator('#status[data-state="connected"]').waitFor();
  people[name] = record;
  return record;
}

async function waitPeople(page, names) {
  const want = [...names].sort().join(',');
  await page.waitForFunction(
    (expected) => [...document.querySelectorAll('#people li')].map((li) => li.textContent).sort().join(',') === expected,
    want,
  );
}

function messages(page, text) {
  return page.locator('#messages li:not(.notice)', { hasText: text });
}

function notice(page, text) {
  return page.locator('#messages li.notice', { hasText: text });
}

/** Subscribes the page to a channel through Echo and resolves with its subscription error, or 'subscribed'. */
function trySubscribe(page, kind, name) {
  return page.evaluate(
    ([how, channel]) =>
      new Promise((resolve) => {
        const subscription = how === 'join' ? window.chat.echo.join(channel) : window.chat.echo.private(channel);
        subscription.error((error) => resolve({ status: error.status, type: error.type }));
        subscription.subscribed(() => resolve('subscribed'));
      }),
    [kind, name],
  );
}

before(async () => {
  failed = true;
  mkdirSync(runDir, { recursive: true });
  for (const file of ['ws2fcgi.log', 'nginx-error.log', 'storage/logs/laravel.log']) {
    rmSync(path.join(runDir, file), { force: true });
  }
  await startStack();
  browser = await launchChromium(chromium);
  failed = false;
});

after(async () => {
  await browser?.close().catch(() => {});
  const result = await stopStack();
  if (failed) {
    console.error(`--- scripts/laravel output\n${stack?.output() ?? ''}`);
    for (const log of ['ws2fcgi.log', 'nginx-error.log', 'storage/logs/laravel.log']) {
      try {
        console.error(`--- ${log}\n${readFileSync(path.join(runDir, log), 'utf8').split('\n').slice(-60).join('\n')}`);
      } catch {
        // not written
      }
    }
  }
  if (stack?.url) {
    assert.equal(result?.code, 143, `scripts/laravel did not stop cleanly: ${JSON.stringify(result)}\n${stack.output()}`);
  }
});

step('a wrong password is refused; alice logs in and is in the lobby', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${stack.url}rooms/lobby`);
  await page.waitForURL(/\/login$/); // the auth middleware sends guests to the form
  await page.locator('input[name=email]').fill('alice@example.com');
  await page.locator('input[name=password]').fill('wrong');
  await page.locator('#login button[type=submit]').click();
  await page.locator('.error', { hasText: 'Wrong e-mail address or password.' }).waitFor();
  await context.close();

  const { page: alice } = await login('alice');
  await waitPeople(alice, ['Alice']);
});

step('bob joins: presence shows both to both, and alice sees him join', async () => {
  const { page: bob } = await login('bob');
  await waitPeople(bob, ['Alice', 'Bob']);
  await waitPeople(people.alice.page, ['Alice', 'Bob']);
  await notice(people.alice.page, 'Bob joined').waitFor();
});

step("a broadcast() from bob's request reaches alice; toOthers() leaves bob out", async () => {
  const { page: alice } = people.alice;
  const { page: bob } = people.bob;
  await bob.locator('#send input[name=text]').fill('hello from bob');
  await bob.locator('#send button').click();
  await messages(alice, 'hello from bob').waitFor();
  // Alice answers. Her message went out after bob's (his request had
  // returned): once it is on bob's page, an echo of his own would be too.
  await alice.locator('#send input[name=text]').fill('hi bob');
  await alice.locator('#send button').click();
  await messages(bob, 'hi bob').waitFor();
  assert.equal(await messages(bob, 'hello from bob').count(), 1, 'bob sees his message once (from his answer, not from Echo)');
  assert.equal(await messages(alice, 'hi bob').count(), 1, 'alice sees hers once');
  assert.equal(await messages(alice, 'hello from bob').count(), 1);
});

step("a nudge reaches bob on his private channel (broadcastAs 'nudge')", async () => {
  const { page: alice } = people.alice;
  await alice.locator('#nudge button', { hasText: 'Bob' }).click();
  await notice(alice, 'you nudged Bob').waitFor();
  await notice(people.bob.page, 'Alice nudged you').waitFor();
  assert.equal(await notice(people.alice.page, 'nudged you').count(), 0, 'only bob is nudged');
});

step('carol is refused the staff room and alice\'s private channel; the lobby works', async () => {
  const carol = await login('carol');
  await waitPeople(carol.page, ['Alice', 'Bob', 'Carol']);
  assert.deepEqual(await trySubscribe(carol.page, 'join', 'room.staff'), { status: 403, type: 'AuthError' });
  assert.deepEqual(await trySubscribe(carol.page, 'private', 'user.1'), { status: 403, type: 'AuthError' });
  // The refusals cost her nothing else: the lobby still delivers.
  await people.bob.page.locator('#send input[name=text]').fill('still there, carol?');
  await people.bob.page.locator('#send button').click();
  await messages(carol.page, 'still there, carol?').waitFor();
  // The staff room's page is refused too (in another tab: hers stays in the lobby).
  const tab = await carol.context.newPage();
  const answer = await tab.goto(`${stack.url}rooms/staff`);
  assert.equal(answer.status(), 403);
  await tab.close();
  // With the endpoint, the browser reports the refused /broadcasting/auth
  // requests (403) as console errors; nothing else may appear.
  carol.errors = carol.errors.filter((e) => !/status of 403/.test(e));
});

step('bob leaves: alice sees him go', async () => {
  await people.bob.context.close();
  await waitPeople(people.alice.page, ['Alice', 'Carol']);
  await notice(people.alice.page, 'Bob left').waitFor();
});

step('no page had a script error', async () => {
  for (const [name, record] of Object.entries(people)) {
    assert.deepEqual(record.errors, [], `${name}'s page`);
  }
});

step(`channels were authorized ${CHANNEL_AUTH === 'php' ? 'with no request from the page (auth = "php")' : 'by /broadcasting/auth'}`, async () => {
  for (const [name, record] of Object.entries(people)) {
    if (CHANNEL_AUTH === 'php') {
      assert.equal(record.authRequests, 0, `${name}'s page asked /broadcasting/auth`);
    } else {
      // Her room's presence channel and her private channel, at least.
      assert.ok(record.authRequests >= 2, `${name}'s page asked /broadcasting/auth ${record.authRequests} times`);
    }
  }
});
