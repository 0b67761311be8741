// The Pusher protocol as a hostile or careless client speaks it, over raw
// `ws`: malformed JSON and unknown events, 10,000 subscribes from one
// connection, client-event floods, wrong protocol versions, silence, and
// the raw ws2fcgi contract working beside it on the same listener.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { APP, Daemon, RawClient, sign, until } from './support.mjs';

let daemon;
const open = [];

before(async () => {
  daemon = await Daemon.start({ pusher: ['max_channels_per_connection = 100', 'client_events_per_second = 10'] });
});

after(async () => {
  for (const c of open) c.ws.terminate();
  await daemon?.stop();
});

async function raw(pathAndQuery) {
  const c = await RawClient.open(daemon.port, pathAndQuery);
  open.push(c);
  return c;
}

const privateAuth = (socketId, channel) => `${APP.key}:${sign(`${socketId}:${channel}`)}`;

test('malformed JSON and unknown events get pusher:error; the connection stays', async () => {
  const c = await raw();
  await c.socketId();
  c.send('{"event":');
  c.send('[1,2]');
  c.send({ event: 'pusher:teleport', data: {} });
  c.send({ event: 'pusher:subscribe', data: { channel: 'bad name!' } });
  const errors = await until('four errors', () => (c.of('pusher:error').length >= 4 ? c.of('pusher:error') : null));
  assert.match(errors[0].data.message, /not a JSON object/);
  assert.match(errors[2].data.message, /unknown event `pusher:teleport`/);
  assert.match(errors[3].data.message, /only letters, digits/);
  for (const e of errors) assert.equal(e.data.code, 4300);
  c.send({ event: 'pusher:ping', data: {} });
  await c.next('pusher:pong');
  assert.equal(c.ws.readyState, WebSocket.OPEN);
});

test('10,000 subscribes from one connection: the cap holds, its other channels work, memory stays bounded', async () => {
  const c = await raw();
  const socketId = await c.socketId();
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-keep', auth: privateAuth(socketId, 'private-keep') } });
  await c.next('pusher_internal:subscription_succeeded', 1, 'private-keep');
  const rssBefore = daemon.rssKiB();
  for (let i = 0; i < 10_000; i++) {
    c.send({ event: 'pusher:subscribe', data: { channel: `flood-${i}` } });
  }
  await until('an answer to each subscribe', () => c.of('pusher_internal:subscription_succeeded').length + c.of('pusher:subscription_error').length >= 10_001, 60_000);
  assert.equal(c.of('pusher_internal:subscription_succeeded').length, 100, 'the cap of 100 channels');
  const refused = c.of('pusher:subscription_error');
  assert.equal(refused.length, 9_901);
  assert.equal(refused[0].data.type, 'LimitReached');
  assert.match(refused[0].data.error, /at most 100 channels/);
  const stats = await daemon.request({ op: 'stats' });
  assert.ok(stats.channels <= 100 + 10, `channels in the hub: ${stats.channels}`);
  // Its first channel still delivers; the connection is open.
  assert.deepEqual(await daemon.publish(['private-keep'], 'still', { ok: true }), { ok: true, delivered: 1 });
  const still = await c.next('still', 1, 'private-keep');
  assert.deepEqual(still.data, { ok: true });
  // Unsubscribing frees room for another channel.
  c.send({ event: 'pusher:unsubscribe', data: { channel: 'flood-0' } });
  c.send({ event: 'pusher:subscribe', data: { channel: 'after' } });
  await c.next('pusher_internal:subscription_succeeded', 1, 'after');
  const grownKiB = daemon.rssKiB() - rssBefore;
  assert.ok(grownKiB < 32 * 1024, `the daemon grew by ${grownKiB} KiB`);
});

test('client events: only on private and presence channels, rate limited, never echoed', async () => {
  const a = await raw();
  const b = await raw();
  const [sa, sb] = [await a.socketId(), await b.socketId()];
  for (const [c, s] of [[a, sa], [b, sb]]) {
    c.send({ event: 'pusher:subscribe', data: { channel: 'private-flood', auth: privateAuth(s, 'private-flood') } });
    c.send({ event: 'pusher:subscribe', data: { channel: 'public-flood' } });
    await c.next('pusher_internal:subscription_succeeded', 1, 'private-flood');
    await c.next('pusher_internal:subscription_succeeded', 1, 'public-flood');
  }
  a.send({ event: 'client-x', channel: 'public-flood', data: {} });
  const notAllowed = await a.next('pusher:error');
  assert.match(notAllowed.data.message, /only for private and presence channels/);
  for (let i = 0; i < 100; i++) a.send({ event: 'client-n', channel: 'private-flood', data: { i } });
  const limited = await a.next('pusher:error', 2);
  assert.equal(limited.data.code, 4301);
  // A marker through the server: b has all that was relayed once it arrives.
  await daemon.publish(['private-flood'], 'marker', '{}');
  await b.next('marker');
  const relayed = b.of('client-n', 'private-flood');
  assert.ok(relayed.length >= 10 && relayed.length < 100, `${relayed.length} relayed`);
  assert.deepEqual(relayed[0].data, { i: 0 });
  await a.next('marker');
  assert.equal(a.of('client-n').length, 0, 'not echoed to the sender');
  assert.equal(a.ws.readyState, WebSocket.OPEN);
});

test('a client event larger than max_message_bytes is dropped with an error', async () => {
  const a = await raw();
  const s = await a.socketId();
  a.send({ event: 'pusher:subscribe', data: { channel: 'private-big', auth: privateAuth(s, 'private-big') } });
  await a.next('pusher_internal:subscription_succeeded', 1, 'private-big');
  a.send({ event: 'client-big', channel: 'private-big', data: { x: 'y'.repeat(20_000) } });
  const error = await a.next('pusher:error');
  assert.equal(error.data.code, 4300);
  assert.match(error.data.message, /larger than 10240 bytes/);
});

test('a presence subscription needs channel_data as signed; a forged sign-in closes with 4009', async () => {
  const c = await raw();
  const s = await c.socketId();
  const data = JSON.stringify({ user_id: 'u1', user_info: { n: 1 } });
  // Signed for other channel_data: refused.
  const other = JSON.stringify({ user_id: 'admin' });
  c.send({ event: 'pusher:subscribe', data: { channel: 'presence-x', auth: `${APP.key}:${sign(`${s}:presence-x:${other}`)}`, channel_data: data } });
  const refused = await c.next('pusher:subscription_error', 1, 'presence-x');
  assert.equal(refused.data.status, 401);
  c.send({ event: 'pusher:subscribe', data: { channel: 'presence-x', auth: `${APP.key}:${sign(`${s}:presence-x:${data}`)}`, channel_data: data } });
  const ok = await c.next('pusher_internal:subscription_succeeded', 1, 'presence-x');
  assert.deepEqual(ok.data.presence, { ids: ['u1'], hash: { u1: { n: 1 } }, count: 1 });
  c.send({ event: 'pusher:signin', data: { auth: `${APP.key}:${'0'.repeat(64)}`, user_data: '{"id":"u1"}' } });
  const { code } = await c.closed;
  assert.equal(code, 4009);
  assert.equal(c.of('pusher:error').at(-1).data.code, 4009);
});

test('protocol versions other than 5 to 7 are refused with the documented codes', async () => {
  for (const [query, code] of [['?protocol=4', 4007], ['?protocol=8', 4007], ['?protocol=x', 4006], ['', 4008]]) {
    const c = await raw(`/app/${APP.key}${query}`);
    const closed = await c.closed;
    assert.equal(closed.code, code, query);
    assert.equal(c.frames[0].data.code, code);
  }
});

test('protocol=5, as pusher-websocket-java (Android) asks for it, is served as 7', async () => {
  const c = await raw(`/app/${APP.key}?client=java-client&protocol=5&version=2.4.4`);
  await c.socketId();
  c.send({ event: 'pusher:subscribe', data: { channel: 'v5' } });
  await c.next('pusher_internal:subscription_succeeded', 1, 'v5');
  c.ws.close();
  await c.closed;
});

test('over max_connections_per_ip: pusher:error and close 4100, so pusher-js backs off and retries', async () => {
  const small = await Daemon.start({ websocket: ['max_connections_per_ip = 1'] });
  try {
    const first = await RawClient.open(small.port);
    await first.socketId();
    const second = await RawClient.open(small.port);
    const { code } = await second.closed;
    assert.equal(code, 4100);
    assert.equal(second.frames[0].data.code, 4100);
    assert.equal(first.ws.readyState, WebSocket.OPEN);
    first.ws.terminate();
  } finally {
    await small.stop();
  }
});

test('at shutdown a Pusher connection is closed with 1001 and the daemon exits 0', async () => {
  const brief = await Daemon.start();
  const c = await RawClient.open(brief.port);
  await c.socketId();
  const exited = brief.stop();
  const { code } = await c.closed;
  assert.equal(code, 1001);
  assert.deepEqual(await exited, { code: 0, signal: null });
});

test('the raw ws2fcgi contract keeps working beside the Pusher endpoint', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${daemon.port}/chat`);
  const got = [];
  ws.on('message', (m) => got.push(String(m)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send('hello');
  await until('the echo from PHP', () => got.length === 1);
  assert.equal(got[0], 'echo:hello');
  ws.close();
});

test('silence: pusher:ping after activity_timeout, then close 4201 when unanswered', async () => {
  const quiet = await Daemon.start({ pusher: ['activity_timeout = "1s"'] });
  try {
    const c = await RawClient.open(quiet.port);
    const established = await c.next('pusher:connection_established');
    assert.equal(established.data.activity_timeout, 1);
    await c.next('pusher:ping');
    // Answering keeps it open for another round.
    c.send({ event: 'pusher:pong', data: {} });
    await c.next('pusher:ping', 2);
    const { code } = await until('the close', () => c.closed, 30_000);
    assert.equal(code, 4201);
    assert.equal(c.of('pusher:error').at(-1).data.code, 4201);
  } finally {
    await quiet.stop();
  }
});
