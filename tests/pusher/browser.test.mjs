// pusher-js's own browser build in a real browser (Debian's chromium, driven
// by playwright-core) against the real daemon: connect, a public channel fed
// by Pusher's server SDK, a private channel authorized by the page's auth
// endpoint (served here, signing as an app's /broadcasting/auth does),
// presence members, client events between two pages, permessage-deflate as
// Chromium negotiates it, terminate_connections, and reconnecting after the
// daemon restarts.
//
// The pages come from a small HTTP server of the test's own on a free port:
// the page, node_modules/pusher-js/dist/web/pusher.min.js, and the auth and
// sign-in endpoints. The pages reach the daemon through a TCP proxy on a
// port of its own, so that a restarted daemon (on a new port) is found at
// the address pusher-js knows. The steps run in order and build on each
// other.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import Pusher from 'pusher';
import { chromium } from 'playwright-core';
import { launchChromium } from '../browser/launch.mjs';

import { Proxy } from '../js/support.mjs';
import { APP, DEADLINE_MS, Daemon, sign, until } from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PUSHER_JS = readFileSync(path.join(here, 'node_modules/pusher-js/dist/web/pusher.min.js'));
// pusher-js waits between attempts after a lost connection; a restarted
// daemon (and its php-fpm) also takes its time on a loaded machine.
const RECONNECT_DEADLINE_MS = 90_000;

let daemon;
let apiPort;
let adminPort;
let proxy;
let site; // { server, url }
let browser; // playwright gives it a fresh temporary profile
const pages = {}; // user -> { page, handshakes: [{ extensions }] }

/** Starts the daemon with the HTTP API and /metrics on ports of their own. */
async function startDaemon() {
  const started = await Daemon.start({ pusher: ['api_listen = "127.0.0.1:0"'], admin: 0 });
  const port = (what) => until(what, () => started.log.match(new RegExp(`${what}.*address=127\\.0\\.0\\.1:(\\d+)`))?.[1]);
  apiPort = Number(await port('serving the Pusher HTTP API'));
  adminPort = Number(await port('serving /healthz and /metrics'));
  return started;
}

/** Pusher's server SDK, pointed at the daemon's API listener. */
const sdk = () =>
  new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(apiPort), useTLS: false, timeout: 20_000 });

/** A counter of the daemon's /metrics (summed over its labels). */
async function metric(name) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

/** Reads a request body (small: form-encoded auth requests). */
function body(req) {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (text += chunk));
    req.on('end', () => resolve(new URLSearchParams(text)));
    req.on('error', reject);
  });
}

/**
 * The site: the page, pusher-js, `POST /auth?user=ID` (channel
 * authorization; `mallory` is refused with 403) and `POST /signin?user=ID`
 * (user authentication), each signed with the app's secret.
 */
async function startSite() {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const user = url.searchParams.get('user') ?? '';
    const json = (status, object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(object));
    };
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><meta charset="utf-8"><title>pusher-js</title><script src="/pusher.min.js"></script>');
    } else if (req.method === 'GET' && url.pathname === '/pusher.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(PUSHER_JS);
    } else if (req.method === 'POST' && url.pathname === '/auth') {
      const form = await body(req);
      const [socketId, channel] = [form.get('socket_id'), form.get('channel_name')];
      if (user === 'mallory') return json(403, { error: 'not yours' });
      if (channel.startsWith('presence-')) {
        const channelData = JSON.stringify({ user_id: user, user_info: { name: user } });
        return json(200, { auth: `${APP.key}:${sign(`${socketId}:${channel}:${channelData}`)}`, channel_data: channelData });
      }
      json(200, { auth: `${APP.key}:${sign(`${socketId}:${channel}`)}` });
    } else if (req.method === 'POST' && url.pathname === '/signin') {
      const form = await body(req);
      const userData = JSON.stringify({ id: user });
      json(200, { auth: `${APP.key}:${sign(`${form.get('socket_id')}::user::${userData}`)}`, user_data: userData });
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

/**
 * A page of its own (own browser context) for `user`, with a pusher-js
 * client through the proxy. In the page: `client`, `got` (every event
 * bound with `listen`), `errors` (connection errors), `sockets` (socket ids
 * it was connected with). The WebSocket handshakes it makes are recorded
 * from the DevTools protocol, with their `Sec-WebSocket-Extensions`.
 */
async function openPage(user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const handshakes = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) => {
    const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
    handshakes.push({ status: response.status, extensions: headers['sec-websocket-extensions'] ?? null });
  });
  await page.goto(site.url);
  const port = Number(new URL(proxy.url).port);
  await page.evaluate(
    ({ key, port, user }) => {
      window.got = [];
      window.errors = [];
      window.sockets = [];
      window.client = new Pusher(key, {
        wsHost: '127.0.0.1',
        wsPort: port,
        forceTLS: false,
        enabledTransports: ['ws'],
        cluster: '',
        disableStats: true,
        channelAuthorization: { endpoint: `/auth?user=${user}`, transport: 'ajax' },
        userAuthentication: { endpoint: `/signin?user=${user}`, transport: 'ajax' },
      });
      client.connection.bind('connected', () => sockets.push(client.connection.socket_id));
      client.connection.bind('error', (e) => errors.push(e?.error?.data?.code ?? e?.data?.code ?? null));
      // Subscribes, records `events` of the channel in `got`, resolves with the outcome.
      window.subscribe = (name, ...events) =>
        new Promise((resolve) => {
          const channel = client.subscribe(name);
          for (const event of events) {
            channel.bind(event, (data, meta) => got.push({ channel: name, event, data, userId: meta?.user_id ?? null }));
          }
          channel.bind('pusher:subscription_succeeded', () => resolve({ ok: true }));
          channel.bind('pusher:subscription_error', (e) => resolve({ ok: false, status: e?.status ?? null }));
        });
    },
    { key: APP.key, port, user },
  );
  pages[user] = { page, context, handshakes };
  return pages[user];
}

/** Runs `fn(arg)` in the page (awaited); its value. */
const run = (user, fn, arg) => pages[user].page.evaluate(fn, arg);

/** Waits in the page until `fn(arg)` is truthy there; its value. */
async function inPage(user, what, fn, arg, timeout = DEADLINE_MS) {
  try {
    const handle = await pages[user].page.waitForFunction(fn, arg, { timeout, polling: 10 });
    return handle.jsonValue();
  } catch (error) {
    throw new Error(`${user}: timed out waiting for ${what} (${error.message.split('\n')[0]})`);
  }
}

const connectedIn = (user) => inPage(user, 'connected', () => client.connection.state === 'connected' && client.connection.socket_id);

before(async () => {
  daemon = await startDaemon();
  proxy = await Proxy.start(daemon.port);
  site = await startSite();
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  site?.server.closeAllConnections();
  await new Promise((resolve) => (site ? site.server.close(resolve) : resolve()));
  await daemon?.stop();
});

test('pusher-js connects from its browser build, with permessage-deflate as Chromium offers it', async () => {
  const { handshakes } = await openPage('alice');
  const socketId = await connectedIn('alice');
  assert.match(socketId, /^\d+\.\d+$/);
  await until('the handshake seen by DevTools', () => handshakes.length >= 1);
  assert.equal(handshakes[0].status, 101);
  assert.match(handshakes[0].extensions ?? '', /^permessage-deflate\b/, 'the daemon agreed to compress');
});

test('a public channel receives what the server SDK triggers, a large event compressed', async () => {
  assert.deepEqual(await run('alice', () => subscribe('news', 'headline')), { ok: true });
  const compressed = await metric('ws2fcgi_compressions_total');
  const long = 'the room is open see you at ten '.repeat(64); // 2 KiB: over compression_min_size
  await sdk().trigger('news', 'headline', { n: 1 });
  await sdk().trigger('news', 'headline', { n: 2, long });
  const got = await inPage('alice', 'two headlines', () => got.filter((e) => e.event === 'headline').length === 2 && got);
  assert.deepEqual(
    got.filter((e) => e.event === 'headline').map((e) => e.data),
    [{ n: 1 }, { n: 2, long }],
  );
  assert.ok((await metric('ws2fcgi_compressions_total')) > compressed, 'the large event went compressed');
});

test('a private channel is authorized by the page’s auth endpoint; a refused one gets subscription_error', async () => {
  assert.deepEqual(await run('alice', () => subscribe('private-orders', 'created')), { ok: true });
  await openPage('mallory');
  await connectedIn('mallory');
  assert.deepEqual(await run('mallory', () => subscribe('private-orders', 'created')), { ok: false, status: 403 });
  await sdk().trigger('private-orders', 'created', { id: 7 });
  const order = await inPage('alice', 'the private event', () => got.find((e) => e.event === 'created'));
  assert.deepEqual(order, { channel: 'private-orders', event: 'created', data: { id: 7 }, userId: null });
  assert.deepEqual(await run('mallory', () => got), [], 'the refused page got nothing');
  await pages.mallory.context.close();
});

test('presence: the member list, member_added and member_removed', async () => {
  await run('alice', () => {
    const channel = client.subscribe('presence-room');
    window.presence = [];
    channel.bind('pusher:member_added', (m) => presence.push(['added', m.id]));
    channel.bind('pusher:member_removed', (m) => presence.push(['removed', m.id]));
    return new Promise((resolve) => channel.bind('pusher:subscription_succeeded', () => resolve(true)));
  });
  await openPage('bob');
  await connectedIn('bob');
  const members = await run('bob', async () => {
    const channel = client.subscribe('presence-room');
    await new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve));
    const ids = [];
    channel.members.each((m) => ids.push([m.id, m.info.name]));
    return { count: channel.members.count, me: channel.members.me.id, ids: ids.sort() };
  });
  assert.deepEqual(members, { count: 2, me: 'bob', ids: [['alice', 'alice'], ['bob', 'bob']] });
  await inPage('alice', 'bob added', () => presence.some(([what, id]) => what === 'added' && id === 'bob'));
  const users = await (await sdk().get({ path: '/channels/presence-room/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['alice', 'bob']);
  await openPage('carol');
  await connectedIn('carol');
  await run('carol', () => subscribe('presence-room'));
  await inPage('alice', 'carol added', () => presence.some(([what, id]) => what === 'added' && id === 'carol'));
  await pages.carol.context.close();
  await inPage('alice', 'carol removed', () => presence.some(([what, id]) => what === 'removed' && id === 'carol'));
});

test('client events go from one page to the other, not back, compressed by Chromium and inflated', async () => {
  for (const user of ['alice', 'bob']) {
    assert.deepEqual(await run(user, () => subscribe('private-chat', 'client-typing', 'marker')), { ok: true });
  }
  const inflated = await metric('ws2fcgi_inflated_messages_total');
  const text = 'typing a long message about the release notes '.repeat(30); // 1.4 KiB
  assert.equal(await run('alice', (text) => client.channel('private-chat').trigger('client-typing', { text }), text), true);
  const event = await inPage('bob', 'the client event', () => got.find((e) => e.event === 'client-typing'));
  assert.deepEqual(event, { channel: 'private-chat', event: 'client-typing', data: { text }, userId: null });
  // A marker from the server after the client event: had the event been
  // echoed, it would have reached alice before the marker.
  await sdk().trigger('private-chat', 'marker', {});
  await inPage('alice', 'the marker', () => got.some((e) => e.event === 'marker'));
  const echoed = await run('alice', () => got.filter((e) => e.event === 'client-typing').length);
  assert.equal(echoed, 0, 'not echoed to the sender');
  assert.ok((await metric('ws2fcgi_inflated_messages_total')) > inflated, 'Chromium compressed it, the daemon inflated it');
});

test('terminate_connections closes a signed-in page with 4009; it connects again when asked', async () => {
  const signedIn = await run('alice', async () => {
    client.signin();
    await client.user.signinDonePromise;
    return client.user.user_data?.id;
  });
  assert.equal(signedIn, 'alice');
  const before = await run('alice', () => sockets.length);
  await sdk().terminateUserConnections('alice');
  await inPage('alice', 'error 4009', () => errors.includes(4009));
  await inPage('alice', 'not connected', () => client.connection.state !== 'connected');
  await run('alice', () => client.connect());
  await connectedIn('alice');
  const sockets = await run('alice', () => sockets);
  assert.equal(sockets.length, before + 1);
  assert.notEqual(sockets.at(-1), sockets.at(-2), 'a new socket_id');
});

test('pusher-js reconnects after the daemon restarts, resubscribes, and receives again', async () => {
  assert.deepEqual(await run('bob', () => subscribe('news', 'headline')), { ok: true });
  const before = await run('bob', () => sockets.length);
  await daemon.stop();
  await inPage('bob', 'the disconnect', () => client.connection.state !== 'connected');
  daemon = await startDaemon();
  proxy.targetPort = daemon.port;
  await inPage('bob', 'connected again', (n) => sockets.length > n && client.connection.state === 'connected', before, RECONNECT_DEADLINE_MS);
  await inPage('bob', 'news subscribed again', () => client.channel('news').subscribed);
  await sdk().trigger('news', 'headline', { n: 3 });
  await inPage('bob', 'the headline after the restart', () => got.some((e) => e.event === 'headline' && e.data.n === 3));
  const handshakes = pages.bob.handshakes;
  assert.ok(handshakes.length >= 2, 'a second handshake');
  assert.match(handshakes.at(-1).extensions ?? '', /^permessage-deflate\b/);
});
