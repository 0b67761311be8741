// pusher-js, unchanged, against the real daemon: connect, public, private,
// presence and cache channels, client events, sign-in and server-to-user
// events, reconnect after a dropped connection.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { Daemon, connected, pusherClient, subscribed, until } from './support.mjs';

let daemon;
const clients = [];

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  for (const c of clients) c.disconnect();
  await daemon?.stop();
});

function client(options) {
  const c = pusherClient(daemon.port, options);
  clients.push(c);
  return c;
}

test('connects with a socket id of the form Pusher requires', async () => {
  const pusher = client();
  const socketId = await connected(pusher);
  assert.match(socketId, /^\d+\.\d+$/);
});

test('a public channel receives what the server publishes', async () => {
  const pusher = client();
  await connected(pusher);
  const { channel } = await subscribed(pusher, 'news');
  const got = [];
  channel.bind('headline', (data) => got.push(data));
  const reply = await daemon.publish(['news'], 'headline', { title: 'Hi "there"', n: 1 });
  assert.deepEqual(reply, { ok: true, delivered: 1 });
  await until('the event', () => got.length === 1);
  assert.deepEqual(got[0], { title: 'Hi "there"', n: 1 });
});

test('a private channel with a signed auth receives events; a forged one is refused with 401', async () => {
  const pusher = client();
  await connected(pusher);
  const { channel } = await subscribed(pusher, 'private-orders');
  const got = [];
  channel.bind('created', (data) => got.push(data));

  const forger = client({ forge: true });
  await connected(forger);
  const refused = await subscribed(forger, 'private-orders').then(
    () => null,
    (e) => e.error,
  );
  assert.equal(refused?.status, 401);
  assert.equal(refused?.type, 'AuthError');
  // The forger's connection and its other channels are unaffected.
  const { channel: open } = await subscribed(forger, 'open-news');
  const forgerGot = [];
  open.bind('e', (data) => forgerGot.push(data));
  forger.channel('private-orders').bind('created', (data) => forgerGot.push(data));

  // One delivery on each channel: the subscriber's, and the forger's public one.
  assert.deepEqual(await daemon.publish(['private-orders', 'open-news'], 'created', { id: 7 }), { ok: true, delivered: 2 });
  await daemon.publish(['open-news'], 'e', { ok: 1 });
  await until('the private event', () => got.length === 1);
  await until("the forger's public events", () => forgerGot.length === 1);
  assert.deepEqual(got, [{ id: 7 }]);
  assert.deepEqual(forgerGot, [{ ok: 1 }], 'no private event reached the forger');
  assert.equal(forger.connection.state, 'connected');
});

test('presence is per user: two connections of one user are one member, added once and removed once', async () => {
  const watcher = client({ user: { id: 'w', info: { name: 'Watcher' } } });
  await connected(watcher);
  const { channel, data: initial } = await subscribed(watcher, 'presence-room');
  assert.equal(initial.count, 1);
  const added = [];
  const removed = [];
  channel.bind('pusher:member_added', (m) => added.push(m));
  channel.bind('pusher:member_removed', (m) => removed.push(m));

  const alice1 = client({ user: { id: 'alice', info: { name: 'Alice' } } });
  const alice2 = client({ user: { id: 'alice', info: { name: 'Alice' } } });
  await connected(alice1);
  const first = await subscribed(alice1, 'presence-room');
  await until('member_added', () => added.length === 1);
  await connected(alice2);
  const second = await subscribed(alice2, 'presence-room');
  assert.equal(first.data.count, 2);
  assert.equal(second.data.count, 2, 'alice is listed once');
  assert.deepEqual(Object.keys(second.data.members).sort(), ['alice', 'w']);
  assert.equal(second.data.members.alice.name, 'Alice');
  assert.equal(second.data.me.id, 'alice');

  const before = await connections();
  alice1.disconnect();
  await until('alice1 gone from the daemon', async () => (await connections()) === before - 1);
  // A marker published now reaches the watcher after anything alice1's close caused.
  const markers = [];
  channel.bind('marker', () => markers.push(1));
  await daemon.publish(['presence-room'], 'marker', '{}');
  await until('the marker', () => markers.length === 1);
  assert.equal(removed.length, 0, 'alice still has a connection');
  alice2.disconnect();
  await until('member_removed', () => removed.length === 1);
  assert.equal(added.length, 1);
  assert.equal(added[0].id, 'alice');
  assert.deepEqual(added[0].info, { name: 'Alice' });
  assert.equal(removed[0].id, 'alice');
  assert.equal(channel.members.count, 1);
});

/** The daemon's live connections (tests in a file run one at a time). */
async function connections() {
  const reply = await daemon.request({ op: 'stats' });
  return reply.connections;
}

test('a cache channel replays its last event to a new subscriber, or says cache_miss', async () => {
  const early = client();
  await connected(early);
  const missChannel = early.subscribe('cache-prices');
  const misses = [];
  missChannel.bind('pusher:cache_miss', () => misses.push(1));
  await until('cache_miss', () => misses.length === 1);

  assert.deepEqual(await daemon.publish(['cache-prices'], 'price', { eur: 1 }), { ok: true, delivered: 1 });
  assert.deepEqual(await daemon.publish(['cache-prices'], 'price', { eur: 2 }), { ok: true, delivered: 1 });

  const late = client();
  await connected(late);
  const lateChannel = late.subscribe('cache-prices');
  const got = [];
  lateChannel.bind('price', (data) => got.push(data));
  const lateMisses = [];
  lateChannel.bind('pusher:cache_miss', () => lateMisses.push(1));
  await until('the cached event', () => got.length === 1);
  assert.deepEqual(got, [{ eur: 2 }], 'only the last event');
  assert.equal(lateMisses.length, 0);
});

test('client events reach the others, not the sender, with user_id on presence channels', async () => {
  const a = client({ user: { id: 'ua' } });
  const b = client({ user: { id: 'ub' } });
  await Promise.all([connected(a), connected(b)]);
  const [{ channel: pa }, { channel: pb }] = await Promise.all([subscribed(a, 'presence-chat'), subscribed(b, 'presence-chat')]);
  const [{ channel: xa }, { channel: xb }] = await Promise.all([subscribed(a, 'private-chat'), subscribed(b, 'private-chat')]);
  const got = { a: [], b: [] };
  pa.bind('client-typing', (data, meta) => got.a.push({ data, meta }));
  pb.bind('client-typing', (data, meta) => got.b.push({ data, meta }));
  xa.bind('client-note', (data) => got.a.push({ data }));
  xb.bind('client-note', (data) => got.b.push({ data }));
  assert.equal(pa.trigger('client-typing', { on: true }), true);
  assert.equal(xa.trigger('client-note', { text: 'x' }), true);
  await until('both client events at b', () => got.b.length === 2);
  assert.deepEqual(got.b[0], { data: { on: true }, meta: { user_id: 'ua' } });
  assert.deepEqual(got.b[1], { data: { text: 'x' } });
  // Not echoed: a marker published after them reaches a first.
  const markers = [];
  xa.bind('marker', () => markers.push(1));
  await daemon.publish(['private-chat'], 'marker', '{}');
  await until('the marker at a', () => markers.length === 1);
  assert.deepEqual(got.a, []);
});

test('sign-in, then events to the user through #server-to-user-<id>', async () => {
  const pusher = client({ user: { id: 'u-42', info: { name: 'Ann' } } });
  const got = [];
  pusher.user.bind('notice', (data) => got.push(data));
  pusher.signin();
  await connected(pusher);
  await pusher.user.signinDonePromise;
  await until('the user channel subscribed', () => pusher.user.serverToUserChannel?.subscribed);
  assert.deepEqual(await daemon.publish(['#server-to-user-u-42'], 'notice', { hi: 1 }), { ok: true, delivered: 1 });
  await until('the user event', () => got.length === 1);
  assert.deepEqual(got, [{ hi: 1 }]);
});

test('pusher-js reconnects by itself after a dropped connection and resubscribes', async () => {
  const proxy = net.createServer((socket) => {
    const upstream = net.createConnection(daemon.port, '127.0.0.1');
    socket.on('error', () => {});
    upstream.on('error', () => {});
    socket.pipe(upstream).pipe(socket);
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const sockets = new Set();
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  try {
    const pusher = pusherClient(proxy.address().port);
    clients.push(pusher);
    const first = await connected(pusher);
    const { channel } = await subscribed(pusher, 'private-feed');
    const got = [];
    channel.bind('item', (data) => got.push(data));
    for (const s of sockets) s.resetAndDestroy();
    const second = await until('a new connection', () => pusher.connection.state === 'connected' && pusher.connection.socket_id !== first && pusher.connection.socket_id);
    assert.match(second, /^\d+\.\d+$/);
    await until('resubscribed', async () => {
      await daemon.publish(['private-feed'], 'item', { n: 1 });
      return got.length > 0;
    });
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => proxy.close(resolve));
  }
});

test("PHP publishes a Pusher event with the PHP client's pusherPublish()", async () => {
  const pusher = client();
  await connected(pusher);
  const { channel } = await subscribed(pusher, 'from-php-channel');
  const got = [];
  channel.bind('from-php', (data) => got.push(data));
  // A raw ws2fcgi connection's message runs app.php on php-fpm, which publishes.
  const ws = new WebSocket(`ws://127.0.0.1:${daemon.port}/raw`);
  const answers = [];
  ws.on('message', (m) => answers.push(String(m)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send('pusher from-php-channel héllo "q"');
  await until('the event from PHP', () => got.length === 1);
  assert.deepEqual(got, [{ text: 'héllo "q"' }]);
  await until("PHP's answer", () => answers.length === 1);
  assert.equal(answers[0], 'published 1');
  ws.close();
});

test('an unknown app key is refused with 4001 and pusher-js does not retry', async () => {
  const pusher = client({ key: 'no-such-key' });
  const errors = [];
  pusher.connection.bind('error', (e) => errors.push(e));
  await until('the 4001 error', () => errors.some((e) => e?.error?.data?.code === 4001));
  await until('pusher-js gives up', () => ['disconnected', 'failed'].includes(pusher.connection.state));
});
