// ws2fcgi.js in Chromium (Debian's chromium, driven by playwright-core)
// against the real daemon, its managed php-fpm and app.php, through the TCP
// proxy of support.mjs: the page's connection is reset mid-stream, without a
// close frame, while a publisher writes 1,000 publications a second.
//
// Run: cd tests/js && npm ci && node --test (see README.md).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { launchChromium } from '../browser/launch.mjs';
import { ControlClient, Daemon, Proxy, Redis, publishAcrossRestart, repo, sleep } from './support.mjs';

const STEP_MS = 20_000;

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>ws2fcgi.js in Chromium</title>
<script type="module">
  import { Ws2fcgi } from '/ws2fcgi.js';
  const params = new URLSearchParams(location.search);
  window.log = { connected: [], disconnected: [], publications: [], lost: [] };
  const client = new Ws2fcgi(params.get('ws'), { minDelay: 50, maxDelay: 200 });
  client.on('connected', (e) => window.log.connected.push(e));
  client.on('disconnected', (e) => window.log.disconnected.push(e));
  client.on('publication', (p) => window.log.publications.push([p.data, p.offset, p.epoch]));
  client.on('lost', (e) => window.log.lost.push(e.channel));
  window.client = client;
</script>`;

let daemon;
let proxy;
let server;
let browser;

before(async () => {
  daemon = await Daemon.start({ pingInterval: '1s' });
  proxy = await Proxy.start(daemon.port);
  const client = readFileSync(path.join(repo, 'js/ws2fcgi.js'));
  server = http.createServer((req, res) => {
    if (req.url === '/ws2fcgi.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(client);
    } else if (req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  if (server) await new Promise((resolve) => server.close(resolve));
  await daemon?.stop();
});

/** A page of ws2fcgi.js connected (once) through `proxyUrl` to `channel`. */
async function openPage(proxyUrl, channel, errors) {
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  const ws = `${proxyUrl}/?${new URLSearchParams({ join: channel })}`;
  await page.goto(`http://127.0.0.1:${server.address().port}/?${new URLSearchParams({ ws })}`);
  await page.waitForFunction(() => window.log?.connected.length === 1, null, { timeout: STEP_MS });
  return page;
}

/** Waits for publication `total`, then checks the page saw "1".."total" once each, in order. */
async function expectAll(page, total) {
  await page.waitForFunction((n) => window.log.publications.at(-1)?.[0] === String(n), total, {
    timeout: STEP_MS,
  });
  const log = await page.evaluate(() => window.log);
  const data = log.publications.map(([d]) => d);
  const expected = Array.from({ length: total }, (_, i) => String(i + 1));
  assert.equal(new Set(data).size, data.length, 'no duplicates');
  assert.deepEqual(expected.filter((d) => !data.includes(d)), [], 'nothing missing');
  assert.deepEqual(data, expected, 'in order');
  return log;
}

test('Chromium, cut mid-stream at 1,000 publications/s: every publication once, in order', async () => {
  const channel = 'room:chromium';
  const errors = [];
  const page = await openPage(proxy.url, channel, errors);

  const total = 3000;
  const cuts = new Set([1000, 2000]);
  const control = await ControlClient.connect(daemon.control);
  try {
    const replies = [];
    const started = Date.now();
    for (let i = 1; i <= total; i++) {
      replies.push(control.request({ op: 'publish', channel, data: String(i) }));
      if (cuts.has(i)) proxy.cut(); // both sockets reset: no close frame either way
      if (i % 10 === 0) await sleep(Math.max(0, started + i - Date.now()));
    }
    const answered = await Promise.all(replies);
    assert.ok(answered.every((r) => r.ok), 'every publish accepted');
    const log = await expectAll(page, total);
    assert.deepEqual(
      log.publications.map(([, offset]) => offset),
      answered.map((r) => r.offset),
      'the offsets the publishes were given',
    );
    assert.equal(log.connected.length, 3, 'reconnected by itself after each cut');
    assert.deepEqual(log.connected.slice(1).map((e) => e.recovered), [true, true]);
    assert.deepEqual(log.lost, []);
    assert.deepEqual(errors, []);
  } finally {
    control.close();
    await page.close();
  }
});

test('Chromium, the daemon restarted with Redis at 1,000 publications/s: every publication once, in order', async () => {
  const redis = await Redis.start();
  const cluster = ['[cluster]', `redis = ${JSON.stringify(redis.url)}`, 'node_id = "chromium-1"'];
  const start = () => Daemon.start({ pingInterval: '1s', extra: cluster });
  let current = await start();
  const restartProxy = await Proxy.start(current.port);
  const errors = [];
  const channel = 'room:chromium-restart';
  const page = await openPage(restartProxy.url, channel, errors);
  try {
    const { answered, daemon } = await publishAcrossRestart({
      daemon: current, proxy: restartProxy, channel, total: 3000, restartAt: 1000, restart: start,
    });
    current = daemon;
    assert.ok(answered.every((r) => r.ok && r.epoch === answered[0].epoch), 'one epoch across the restart');
    const log = await expectAll(page, 3000);
    assert.ok(log.connected.length >= 2, 'reconnected by itself');
    assert.ok(log.connected.slice(1).every((e) => e.recovered), 'every reconnect recovered');
    assert.equal(log.disconnected[0].code, 1001);
    assert.deepEqual(log.lost, []);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await restartProxy.stop();
    await current.stop();
    await redis.stop();
  }
});
