// permessage-deflate with Chromium (Debian's chromium, driven by
// playwright-core), which offers it on every WebSocket: the daemon's answer
// as the page sees it (WebSocket.extensions), text and binary both ways
// (Chromium compresses what it sends; the daemon compresses PHP's echo), and
// a publication to several members compressed once, counted in the daemon's
// metrics (`ws2fcgi_compressions_total`, `ws2fcgi_inflated_messages_total`).
//
// Run: cd tests/js && npm ci && node --test (see README.md).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { launchChromium } from '../browser/launch.mjs';
import { Daemon } from './support.mjs';

const STEP_MS = 20_000;
const MEMBERS = 5;

let daemon;
let server;
let browser;
let page;
let metricsPort;

/** A free loopback port for the admin listener (its port is not logged). */
async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** One counter of the daemon's /metrics. */
async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

before(async () => {
  metricsPort = await freePort();
  daemon = await Daemon.start({ history: null, admin: metricsPort });
  server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><title>deflate</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  browser = await launchChromium(chromium);
  page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  page.setDefaultTimeout(STEP_MS);
});

after(async () => {
  await browser?.close();
  server?.close();
  await daemon?.stop();
});

test('Chromium negotiates it and both directions are compressed, text and binary', async () => {
  const before = { out: await metric('ws2fcgi_compressions_total'), in: await metric('ws2fcgi_inflated_messages_total') };
  const result = await page.evaluate(async (url) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const queue = [];
    let wake = null;
    ws.onmessage = (e) => {
      queue.push(e.data);
      wake?.();
    };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('websocket error'));
    });
    const next = async () => {
      while (queue.length === 0) await new Promise((resolve) => (wake = resolve));
      return queue.shift();
    };
    const text = JSON.stringify(Array.from({ length: 200 }, (_, i) => ({ user: 'ann', text: 'hello there', n: i })));
    const binary = new Uint8Array(50_000).map((_, i) => i % 7);
    ws.send(text);
    const textBack = await next();
    ws.send(binary);
    const binaryBack = new Uint8Array(await next());
    ws.send('hi');
    const smallBack = await next();
    ws.close();
    return {
      extensions: ws.extensions,
      text: textBack === text,
      binary: binaryBack.length === binary.length && binaryBack.every((b, i) => b === binary[i]),
      small: smallBack,
    };
  }, `${daemon.url}/`);
  assert.equal(result.extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  assert.deepEqual([result.text, result.binary, result.small], [true, true, 'hi']);
  // The daemon compressed the two large echoes, not "hi" (under 256 bytes);
  // Chromium compressed all three of its messages.
  assert.equal((await metric('ws2fcgi_compressions_total')) - before.out, 2);
  assert.equal((await metric('ws2fcgi_inflated_messages_total')) - before.in, 3);
});

test('a publication to several Chromium members is compressed once', async () => {
  await page.evaluate(
    async ({ url, members }) => {
      window.got = [];
      window.members = await Promise.all(
        Array.from(
          { length: members },
          () =>
            new Promise((resolve, reject) => {
              const ws = new WebSocket(url);
              ws.onmessage = (e) => window.got.push(e.data);
              ws.onopen = () => resolve(ws);
              ws.onerror = () => reject(new Error('websocket error'));
            }),
        ),
      );
    },
    { url: `${daemon.url}/?join=room`, members: MEMBERS },
  );
  const before = await metric('ws2fcgi_compressions_total');
  const data = JSON.stringify({ user: 'ann', text: 'hello everyone '.repeat(40) });
  const reply = await daemon.request({ op: 'publish', channel: 'room', data });
  assert.equal(reply.delivered, MEMBERS);
  await page.waitForFunction((n) => window.got.length === n, MEMBERS);
  assert.deepEqual(await page.evaluate(() => window.got), Array(MEMBERS).fill(data));
  assert.equal((await metric('ws2fcgi_compressions_total')) - before, 1);
  await page.evaluate(() => window.members.forEach((ws) => ws.close()));
});
