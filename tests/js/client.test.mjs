// ws2fcgi.js in Node (with the ws package) against the real daemon, its
// managed php-fpm and app.php. Network faults come from a TCP proxy in the
// test (support.mjs): a connection reset without a close frame, a connection
// that silently stops forwarding, a client that cannot get through.
//
// Run: cd tests/js && npm ci && node --test (see README.md).

import { after, afterEach, before, test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Ws2fcgi } from '../../js/ws2fcgi.js';
import { ControlClient, Daemon, Proxy, Redis, of, publishAcrossRestart, record, sleep, until } from './support.mjs';

// Short heartbeat (hb = 1 s): a silent connection is noticed within 3 s.
const HB_SECONDS = 1;
const HISTORY = [
  'size = 100000',
  'ttl = "5m"',
  'max_bytes = "64MiB"',
  '[[history.channel]]',
  'pattern = "small:*"',
  'size = 10',
  '[[history.channel]]',
  'pattern = "brief:*"',
  'size = 100',
  'ttl = "1s"',
  '[[history.channel]]',
  'pattern = "none:*"',
  'size = 0',
].join('\n');

let daemon;
const cleanups = [];
let failed = false; // then the daemon's log is printed at the end

/** A test that flags its failure for after(). */
function test(name, fn) {
  nodeTest(name, async () => {
    try {
      await fn();
    } catch (error) {
      failed = true;
      throw error;
    }
  });
}

/** Stopped after the test, failed or not. */
function later(fn) {
  cleanups.push(fn);
}

before(async () => {
  daemon = await Daemon.start({ history: HISTORY, pingInterval: `${HB_SECONDS}s` });
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

after(async () => {
  if (daemon) {
    if (failed) console.error(`--- ws2fcgi log\n${daemon.log.split('\n').slice(-80).join('\n')}`);
    await daemon.stop();
  }
});

/** A client of ws2fcgi.js through `proxy` (or straight to the daemon), closed after the test. */
function client(base, query, options = {}) {
  const c = new Ws2fcgi(`${base}/?${new URLSearchParams(query)}`, { WebSocket, minDelay: 50, maxDelay: 200, ...options });
  const events = record(c);
  later(() => c.close());
  return { client: c, events };
}

async function proxyTo(port) {
  const proxy = await Proxy.start(port);
  later(() => proxy.stop());
  return proxy;
}

async function publish(channel, data, extra = {}) {
  const reply = await daemon.request({ op: 'publish', channel, data, ...extra });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  return reply;
}

test('text stays a string, binary becomes a Uint8Array; publications carry offset and epoch', async () => {
  const { client: c, events } = client(daemon.url, { join: 'room:types,none:types' });
  await until('connected', () => of(events, 'connected').length === 1);
  const [connected] = of(events, 'connected');
  assert.match(connected.connectionId, /^[0-9a-f]{40}$/);
  assert.equal(connected.recovered, false, 'nothing to recover on a first connection');

  assert.equal(c.send('hello'), true);
  assert.equal(c.send(new Uint8Array([0, 10, 255])), true);
  assert.equal(c.send(new Uint8Array([1, 2, 3, 4]).subarray(1, 3)), true, 'a view sends its own bytes');
  assert.equal(c.send(new Uint8Array([9]).buffer), true);
  await until('four echoes', () => of(events, 'message').length === 4);
  const [text, binary, view, buffer] = of(events, 'message');
  assert.equal(text, 'hello');
  assert.ok(binary instanceof Uint8Array);
  assert.deepEqual([...binary], [0, 10, 255]);
  assert.deepEqual([...view], [2, 3]);
  assert.deepEqual([...buffer], [9]);
  assert.throws(() => c.send({ not: 'data' }), TypeError);

  const first = await publish('room:types', 'line 1\nline 2');
  const second = await publish('room:types', Buffer.from([10, 0]).toString('base64'), { binary: true });
  await publish('none:types', 'no history here');
  assert.equal(second.offset, first.offset + 1);
  await until('three publications', () => of(events, 'publication').length === 3);
  const [p1, p2, p3] = of(events, 'publication');
  assert.deepEqual(p1, { channel: 'room:types', data: 'line 1\nline 2', offset: first.offset, epoch: first.epoch });
  assert.equal(p2.channel, 'room:types');
  assert.ok(p2.data instanceof Uint8Array);
  assert.deepEqual([...p2.data], [10, 0]);
  assert.equal(p2.offset, second.offset);
  assert.deepEqual(p3, { channel: 'none:types', data: 'no history here', offset: undefined, epoch: undefined });

  c.close();
  assert.equal(c.send('after close'), false, 'nothing is sent, or kept, after close()');
  assert.deepEqual(of(events, 'disconnected'), [{ code: 1000, reason: 'closed by the client', willReconnect: false }]);
  assert.deepEqual(of(events, 'lost'), []);
});

test('cut mid-stream at 1,000 publications/s: every publication once, in order', async () => {
  const channel = 'room:stream';
  const proxy = await proxyTo(daemon.port);
  const { client: c, events } = client(proxy.url, { join: channel });
  await until('connected', () => of(events, 'connected').length === 1);

  const total = 3000;
  const cuts = new Set([1000, 2000]);
  const control = await ControlClient.connect(daemon.control);
  later(() => control.close());
  const replies = [];
  const started = Date.now();
  for (let i = 1; i <= total; i++) {
    replies.push(control.request({ op: 'publish', channel, data: String(i) }));
    if (cuts.has(i)) proxy.cut(); // both sockets reset: no close frame either way
    if (i % 10 === 0) {
      const due = started + i; // 1,000 a second, 10 at a time
      await sleep(Math.max(0, due - Date.now()));
    }
  }
  const answered = await Promise.all(replies);
  answered.forEach((reply, i) => {
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.offset, answered[0].offset + i, 'offsets 1, 2, 3, … per channel');
  });

  await until(`publication ${total}`, () => of(events, 'publication').at(-1)?.data === String(total));
  const received = of(events, 'publication');
  const data = received.map((p) => p.data);
  const expected = Array.from({ length: total }, (_, i) => String(i + 1));
  const missing = expected.filter((d) => !data.includes(d));
  assert.equal(new Set(data).size, data.length, 'no duplicates');
  assert.deepEqual(missing, [], 'nothing missing');
  assert.deepEqual(data, expected, 'in order');
  assert.ok(received.every((p) => p.epoch === answered[0].epoch));

  const connected = of(events, 'connected');
  assert.equal(connected.length, 3, 'reconnected after each cut');
  assert.deepEqual(connected.slice(1).map((e) => e.recovered), [true, true]);
  assert.equal(new Set(connected.map((e) => e.connectionId)).size, 3, 'a new connection each time');
  const disconnected = of(events, 'disconnected');
  assert.deepEqual(disconnected.map((e) => [e.code, e.willReconnect]), [[1006, true], [1006, true]]);
  assert.deepEqual(of(events, 'lost'), []);
  console.log(`received ${total} publications in ${Date.now() - started} ms across ${connected.length} connections`);
});

test('history evicted while cut off (size, then ttl): `lost`, not a silent gap', async () => {
  for (const [channel, beforeReconnect] of [
    ['small:evicted', async () => {
      for (let i = 6; i <= 30; i++) await publish('small:evicted', String(i)); // size = 10 keeps 21..30
    }],
    ['brief:expired', async () => {
      for (let i = 6; i <= 8; i++) await publish('brief:expired', String(i));
      await sleep(1500); // ttl = 1s: 6..8 are gone
    }],
  ]) {
    const proxy = await proxyTo(daemon.port);
    const { client: c, events } = client(proxy.url, { join: channel });
    await until('connected', () => of(events, 'connected').length === 1);
    for (let i = 1; i <= 5; i++) await publish(channel, String(i));
    await until('five publications', () => of(events, 'publication').length === 5);

    proxy.refuse = true;
    proxy.cut();
    await until('disconnected', () => of(events, 'disconnected').length === 1);
    assert.equal(c.send('while away'), false, 'nothing is sent, or kept, while disconnected');
    await beforeReconnect();
    const attempts = proxy.accepted;
    await until('an attempt refused by the network', () => proxy.accepted > attempts);
    proxy.refuse = false;

    await until('reconnected', () => of(events, 'connected').length === 2);
    await until('lost', () => of(events, 'lost').length === 1);
    assert.equal(of(events, 'connected')[1].recovered, false);
    assert.deepEqual(of(events, 'lost'), [{ channel }]);
    const live = await publish(channel, 'live');
    await until('the live publication', () => of(events, 'publication').at(-1)?.data === 'live');
    const reconnected = events.indexOf(events.filter((e) => e.event === 'connected')[1]);
    assert.deepEqual(
      events.slice(reconnected).filter((e) => e.event !== 'message').map((e) => e.event),
      ['connected', 'lost', 'publication'],
      'told it was lost, then only live publications: no silent part of the gap',
    );
    assert.equal(of(events, 'publication').at(-1).offset, live.offset);
    c.close();
  }
});

test('the daemon restarted (memory history): a new epoch, so `lost`', async () => {
  const first = await Daemon.start({ pingInterval: '30s' });
  let second;
  later(async () => {
    await first.stop();
    await second?.stop();
  });
  const proxy = await proxyTo(first.port);
  const { events } = client(proxy.url, { join: 'room:restart' });
  await until('connected', () => of(events, 'connected').length === 1);
  const before = await first.request({ op: 'publish', channel: 'room:restart', data: 'before' });
  await until('the publication', () => of(events, 'publication').length === 1);

  proxy.refuse = true;
  await first.stop(); // SIGTERM: the client gets 1001 and tries again, in vain for now
  await until('disconnected', () => of(events, 'disconnected').length === 1);
  assert.equal(of(events, 'disconnected')[0].code, 1001);
  second = await Daemon.start({ pingInterval: '30s' });
  proxy.targetPort = second.port;
  proxy.refuse = false;

  await until('reconnected', () => of(events, 'connected').length === 2);
  await until('lost', () => of(events, 'lost').length === 1);
  assert.deepEqual(of(events, 'lost'), [{ channel: 'room:restart' }]);
  assert.equal(of(events, 'connected')[1].recovered, false);
  const after = await second.request({ op: 'publish', channel: 'room:restart', data: 'after' });
  assert.notEqual(after.epoch, before.epoch, 'a restart without Redis changes the epoch');
  await until('the new publication', () => of(events, 'publication').length === 2);
  assert.deepEqual(of(events, 'publication')[1], { channel: 'room:restart', data: 'after', offset: after.offset, epoch: after.epoch });
});

test('close 4000-4099 is final; 4100 and 1000 are not', async () => {
  const proxy = await proxyTo(daemon.port);
  const { client: c, events } = client(proxy.url, { join: 'room:final' });
  await until('connected', () => of(events, 'connected').length === 1);
  c.send('close 4100 try again');
  await until('reconnected after 4100', () => of(events, 'connected').length === 2);
  c.send('close 1000');
  await until('reconnected after 1000', () => of(events, 'connected').length === 3);
  c.send('close 4000 logged out');
  await until('disconnected by 4000', () => of(events, 'disconnected').length === 3);
  assert.deepEqual(of(events, 'disconnected'), [
    { code: 4100, reason: 'try again', willReconnect: true },
    { code: 1000, reason: '', willReconnect: true },
    { code: 4000, reason: 'logged out', willReconnect: false },
  ]);
  await sleep(1000); // five times maxDelay: an attempt would have come
  assert.equal(proxy.accepted, 3, 'no attempt after the final close');
  assert.equal(c.send('x'), false);
});

test('a handshake refused with 403 is final; 503 with Retry-After waits that long', async () => {
  const proxy = await proxyTo(daemon.port);
  const { events: refused } = client(proxy.url, { refuse: '403' });
  await until('disconnected', () => of(refused, 'disconnected').length === 1);
  assert.deepEqual(of(refused, 'disconnected'), [{ code: 1006, reason: 'handshake refused: HTTP 403', willReconnect: false }]);
  await sleep(1000);
  assert.equal(proxy.accepted, 1, 'no second attempt after a 403');
  assert.deepEqual(of(refused, 'connected'), []);

  const busy = await proxyTo(daemon.port);
  const times = [];
  busy.server.on('connection', () => times.push(Date.now()));
  const { client: c, events } = client(busy.url, { refuse: '503', retry_after: '1' });
  await until('a second attempt', () => times.length >= 2, 10_000);
  assert.ok(times[1] - times[0] >= 1000, `Retry-After: 1 honoured (waited ${times[1] - times[0]} ms)`);
  assert.deepEqual(of(events, 'connected'), []);
  assert.deepEqual(of(events, 'disconnected'), [], 'failed attempts are not disconnections');
  c.close();
  assert.deepEqual(of(events, 'disconnected'), [{ code: 1000, reason: 'closed by the client', willReconnect: false }]);
});

test('a connection that goes silent is dropped within 2 × heartbeat and replaced', async () => {
  const proxy = await proxyTo(daemon.port);
  const { events } = client(proxy.url, { join: 'room:silent' });
  await until('connected', () => of(events, 'connected').length === 1);
  await sleep(3 * HB_SECONDS * 1000 + 500); // heartbeats keep an idle connection alive
  assert.deepEqual(of(events, 'disconnected'), [], 'an idle but live connection stays');

  const frozen = Date.now();
  proxy.freeze();
  await until('disconnected', () => of(events, 'disconnected').length === 1, 15_000);
  const noticed = events.find((e) => e.event === 'disconnected').at - frozen;
  assert.deepEqual(of(events, 'disconnected'), [{ code: 1006, reason: 'heartbeat timeout', willReconnect: true }]);
  // 2 × hb + 1 s of slack after the last frame, which came at most hb before the freeze; more for a loaded machine.
  assert.ok(noticed <= 2 * HB_SECONDS * 1000 + 1000 + 3000, `noticed after ${noticed} ms`);
  await until('reconnected', () => of(events, 'connected').length === 2);
  const reply = await publish('room:silent', 'still here');
  await until('a publication on the new connection', () => of(events, 'publication').at(-1)?.offset === reply.offset);
});

test('more positions than one handshake carries: each channel recovered or lost, none silently', async () => {
  const channels = Array.from({ length: 300 }, (_, i) => `many:${String(i).padStart(3, '0')}`);
  const proxy = await proxyTo(daemon.port);
  const { events } = client(proxy.url, { join: channels.join(',') });
  await until('connected', () => of(events, 'connected').length === 1);
  const control = await ControlClient.connect(daemon.control);
  later(() => control.close());
  const publishAll = (data) => Promise.all(channels.map((channel) => control.request({ op: 'publish', channel, data })));
  await publishAll('before');
  await until('300 publications', () => of(events, 'publication').length === 300);

  proxy.refuse = true;
  proxy.cut();
  await until('disconnected', () => of(events, 'disconnected').length === 1);
  await publishAll('while away');
  proxy.refuse = false;

  await until('reconnected', () => of(events, 'connected').length === 2);
  const caughtUp = () => new Set(of(events, 'publication').filter((p) => p.data === 'while away').map((p) => p.channel));
  const lost = () => new Set(of(events, 'lost').map((l) => l.channel));
  await until('every channel caught up or lost', () => channels.every((c) => caughtUp().has(c) || lost().has(c)));
  assert.equal(of(events, 'connected')[1].recovered, false, 'not every channel was recovered');
  assert.ok(lost().size > 0 && caughtUp().size > 0, `lost ${lost().size}, caught up ${caughtUp().size}`);
  assert.deepEqual(channels.filter((c) => caughtUp().has(c) && lost().has(c)), [], 'never both');
  assert.ok(!/since/.test(daemon.log.split('\n').filter((l) => l.includes('refused')).join('\n')), 'the token was accepted');
});

test('a publication the client was left out of (`except`) moves its position: no `lost` after it', async () => {
  const { events } = client(daemon.url, { join: 'room:except' });
  await until('connected', () => of(events, 'connected').length === 1);
  const [{ connectionId }] = of(events, 'connected');
  await publish('room:except', 'not for you', { except: connectionId });
  await publish('room:except', 'for you');
  await until('one publication', () => of(events, 'publication').length === 1);
  const [p] = of(events, 'publication');
  assert.equal(p.data, 'for you');
  assert.deepEqual(of(events, 'lost'), [], 'the skipped offset is no gap');
});

test('the daemon restarted with Redis at 1,000 publications/s: every publication once, in order', async () => {
  const redis = await Redis.start();
  const cluster = ['[cluster]', `redis = ${JSON.stringify(redis.url)}`, 'node_id = "js-1"'];
  const start = () => Daemon.start({ pingInterval: `${HB_SECONDS}s`, extra: cluster });
  let current = await start();
  later(async () => {
    await current.stop();
    await redis.stop();
  });
  const proxy = await proxyTo(current.port);
  const channel = 'room:redis-restart';
  const { events } = client(proxy.url, { join: channel });
  await until('connected', () => of(events, 'connected').length === 1);

  const total = 3000;
  const { answered, daemon } = await publishAcrossRestart({
    daemon: current, proxy, channel, total, restartAt: 1000, restart: start,
  });
  current = daemon;
  answered.forEach((reply, i) => {
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.offset, i + 1, 'offsets go on across the restart');
    assert.equal(reply.epoch, answered[0].epoch, 'the epoch survives a restart: the history is in Redis');
  });
  await until(`publication ${total}`, () => of(events, 'publication').at(-1)?.data === String(total));
  const data = of(events, 'publication').map((p) => p.data);
  assert.deepEqual(data, Array.from({ length: total }, (_, i) => String(i + 1)), 'complete, in order, no duplicate');
  const connected = of(events, 'connected');
  assert.ok(connected.length >= 2, 'reconnected by itself');
  assert.ok(connected.slice(1).every((e) => e.recovered), 'every reconnect recovered');
  assert.deepEqual(of(events, 'disconnected')[0], { code: 1001, reason: 'server shutdown', willReconnect: true });
  assert.deepEqual(of(events, 'lost'), []);
});
