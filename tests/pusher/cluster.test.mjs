// The Pusher protocol across the nodes of a cluster: three real daemons
// sharing one real redis-server, pusher-js clients and Pusher's own server
// SDK (`pusher`) pointed at different nodes. An event published on one node
// reaches every node once, socket_id excludes a connection of another node,
// client events and cache channels cross nodes, presence is per user over
// the whole cluster (the same user on two nodes: one member_added, one
// member_removed), a killed node's members are removed, the channels'
// changes reach PHP once for the cluster (every node runs the app's script,
// tests/pusher/events.php, appending to one log), and the HTTP API counts
// and terminates across nodes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import Pusher from 'pusher';

import { APP, DEADLINE_MS, Daemon, RawClient, Redis, connected, pusherClient, sign, subscribed, until } from './support.mjs';

let redis;
/** Nodes a, b, c (c is also an observer's node). */
const nodes = {};
const clients = [];

/** Quick to reap a killed node: it disappears within 2 s + 2/3 s. */
const NODE_TTL = '2s';

// The app's events to PHP, of every node, in one log (events.php appends a JSON line each).
const here = path.dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-pusher-cluster-'));
const log = path.join(dir, 'events.log');
const script = path.join(dir, 'events.php');
writeFileSync(script, `<?php\nconst EVENTS_LOG = ${JSON.stringify(log)};\nrequire ${JSON.stringify(path.join(here, 'events.php'))};\n`);
writeFileSync(log, '');

/** The events PHP got so far on every node, parsed. */
const events = () =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));

function startNode(nodeId) {
  return Daemon.start({ app: [`script = ${JSON.stringify(script)}`], cluster: { redis: redis.url, nodeId, nodeTtl: NODE_TTL } });
}

/** Resolves when the node is connected to Redis and has read the Pusher state kept there. */
function joined(daemon) {
  return until(`${daemon.nodeId} to join the cluster`, () => /this node is part of the cluster/.test(daemon.log) && /pusher presence and cache channels read from redis/.test(daemon.log));
}

before(async () => {
  redis = await Redis.start();
  for (const id of ['a', 'b', 'c']) {
    nodes[id] = await startNode(id);
    nodes[id].nodeId = id;
  }
  await Promise.all(Object.values(nodes).map(joined));
});

after(async () => {
  for (const c of clients) c.disconnect?.() ?? c.close?.();
  for (const daemon of Object.values(nodes)) await daemon.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function client(node, options) {
  const c = pusherClient(nodes[node].port, options);
  clients.push(c);
  return c;
}

/** The server SDK, pointed at a node. */
function sdk(node) {
  return new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(nodes[node].port), useTLS: false, timeout: 20_000 });
}

async function get(node, path, params) {
  const response = await sdk(node).get({ path, params });
  assert.equal(response.status, 200);
  return response.json();
}

/** `redis-cli` against the test's Redis. */
function redisCli(...args) {
  const run = spawnSync('redis-cli', ['-s', redis.socket, '--raw', ...args], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout;
}

/** A subscriber of `channel` on `node` that records the `event`s it receives (data.n). */
async function listener(node, channel, event, options) {
  const pusher = client(node, options);
  const socketId = await connected(pusher);
  const { channel: ch } = await subscribed(pusher, channel);
  const got = [];
  ch.bind(event, (data) => got.push(data.n));
  return { pusher, socketId, got, channel: ch };
}

test('an event published on one node reaches every node once; socket_id excludes a connection of another node', async () => {
  const [onA, onB, excluded] = [await listener('a', 'news', 'headline'), await listener('b', 'news', 'headline'), await listener('b', 'news', 'headline')];
  await sdk('a').trigger('news', 'headline', { n: 1 }, { socket_id: excluded.socketId });
  await sdk('c').triggerBatch([{ channel: 'news', name: 'headline', data: { n: 2 } }]);
  const control = await nodes.b.publish(['news'], 'headline', { n: 3 }, onA.socketId);
  assert.equal(control.ok, true);
  await until('every event everywhere', () => onA.got.length === 2 && onB.got.length === 3 && excluded.got.length === 2);
  // One more, so a duplicate of the first three would have arrived before it.
  await sdk('b').trigger('news', 'headline', { n: 4 });
  await until('the last event everywhere', () => [onA, onB, excluded].every((l) => l.got.includes(4)));
  // Publishes made through different nodes have no common order: compare sets.
  const sorted = (got) => [...got].sort();
  assert.deepEqual(sorted(onA.got), [1, 2, 4], 'a was excluded from 3, published on b');
  assert.deepEqual(sorted(onB.got), [1, 2, 3, 4]);
  assert.deepEqual(sorted(excluded.got), [2, 3, 4], 'excluded from 1, published on a');
});

test('a client event on one node reaches the other nodes, not its sender', async () => {
  const user = { id: 'typist' };
  const sender = await listener('a', 'private-chat', 'client-typing', { user });
  const far = await listener('b', 'private-chat', 'client-typing', { user });
  const farther = await listener('c', 'private-chat', 'client-typing', { user });
  assert.equal(sender.channel.trigger('client-typing', { n: 1 }), true);
  await until('the client event on b and c', () => far.got.length === 1 && farther.got.length === 1);
  await sdk('a').trigger('private-chat', 'client-typing', { n: 2 });
  await until('the marker everywhere', () => sender.got.includes(2) && far.got.includes(2) && farther.got.includes(2));
  assert.deepEqual(sender.got, [2], 'the sender does not get its own client event');
  assert.deepEqual(far.got, [1, 2]);
});

test('a cache channel replays on another node the event published on one; cache_miss otherwise', async () => {
  await sdk('a').trigger('cache-price', 'tick', { n: 41 });
  await sdk('a').trigger('cache-price', 'tick', { n: 42 });
  const late = client('b');
  await connected(late);
  const channel = late.subscribe('cache-price');
  const got = [];
  channel.bind('tick', (data) => got.push(data.n));
  await until('the cached event on b', () => got.length === 1);
  assert.deepEqual(got, [42]);
  const missing = client('c');
  await connected(missing);
  const empty = missing.subscribe('cache-empty');
  let missed = false;
  empty.bind('pusher:cache_miss', () => (missed = true));
  await until('cache_miss on c', () => missed);
});

test('a node started after a cache channel\'s event reads it from redis (kept 30 minutes)', async () => {
  await sdk('a').trigger('cache-before', 'tick', { n: 7 });
  const key = `ws2fcgi:pusher:cache:\u00011001\u0001cache-before`;
  await until('the event kept in redis', () => Number(redisCli('PTTL', key)) > 29 * 60 * 1000);
  const late = await startNode('e');
  nodes.e = late;
  late.nodeId = 'e';
  await joined(late);
  const pusher = client('e');
  await connected(pusher);
  const got = [];
  let missed = false;
  const channel = pusher.subscribe('cache-before');
  channel.bind('tick', (data) => got.push(data.n));
  channel.bind('pusher:cache_miss', () => (missed = true));
  await until('the cached event on the new node', () => got.length === 1 || missed);
  assert.deepEqual([got, missed], [[7], false]);
});

/** A presence subscriber of `name` on `node` as `id`; records the member events it sees. */
async function member(node, id, name = 'presence-room') {
  const pusher = client(node, { user: { id, info: { name: `user ${id}` } } });
  await connected(pusher);
  const { channel, data } = await subscribed(pusher, name);
  const seen = { added: [], removed: [] };
  channel.bind('pusher:member_added', (m) => seen.added.push(m.id));
  channel.bind('pusher:member_removed', (m) => seen.removed.push(m.id));
  return { pusher, channel, data, seen };
}

const ids = (members) => Object.keys(members.members).sort();

test('presence is per user over the cluster: the same user on two nodes is added once and removed once', async () => {
  const observer = await member('c', 'observer');
  assert.deepEqual(ids(observer.channel.members), ['observer']);
  const firstTab = await member('a', 'ada');
  await until('ada added, seen on c', () => observer.seen.added.includes('ada'));
  const secondTab = await member('b', 'ada');
  assert.deepEqual(ids(secondTab.channel.members), ['ada', 'observer'], 'the list has every node\'s users, each once');
  const other = await member('b', 'bob');
  await until('bob added, seen on c', () => observer.seen.added.includes('bob'));
  assert.deepEqual(observer.seen.added, ['ada', 'bob'], 'ada\'s second connection, on another node, is not announced');
  assert.deepEqual(ids(firstTab.channel.members), ['ada', 'bob', 'observer']);

  // The HTTP API counts every node, whichever node it asks.
  for (const node of ['a', 'c']) {
    assert.deepEqual((await get(node, '/channels/presence-room/users')).users.map((u) => u.id).sort(), ['ada', 'bob', 'observer']);
    await until(`subscription_count 4 on ${node}`, async () => {
      const info = await get(node, '/channels/presence-room', { info: 'user_count,subscription_count' });
      return info.occupied && info.user_count === 3 && info.subscription_count === 4;
    });
    const listed = await get(node, '/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
    assert.deepEqual(listed, { channels: { 'presence-room': { user_count: 3 } } });
  }
  const all = await get('a', '/channels', { info: 'subscription_count' });
  assert.ok(all.channels['news'], 'channels subscribed on other nodes are listed');
  assert.ok(!Object.keys(all.channels).some((name) => name.startsWith('#')), 'user channels are not listed');

  firstTab.pusher.disconnect();
  secondTab.pusher.unsubscribe('presence-room');
  await until('ada removed, seen on c', () => observer.seen.removed.includes('ada'));
  other.pusher.disconnect();
  await until('bob removed, seen on c', () => observer.seen.removed.includes('bob'));
  assert.deepEqual(observer.seen.removed, ['ada', 'bob'], 'ada removed once, when her last connection anywhere left');
  assert.deepEqual(observer.seen.added, ['ada', 'bob']);
  assert.deepEqual(ids(observer.channel.members), ['observer']);
  observer.pusher.disconnect();
});

test('the channels\' changes reach PHP once for the cluster, from the node whose connection made them', async () => {
  const name = 'presence-hooks';
  const changes = () => events().filter((e) => e.channel === name && ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'].includes(e.event));
  const adaOnA = await member('a', 'ada', name);
  await until('occupied and ada added', () => changes().length === 2);
  const adaOnB = await member('b', 'ada', name);
  const bobOnC = await member('c', 'bob', name);
  await until('bob added', () => changes().some((e) => e.event === 'member_added' && e.user === 'bob'));
  adaOnA.pusher.disconnect();
  adaOnB.pusher.disconnect();
  await until('ada removed', () => changes().some((e) => e.event === 'member_removed' && e.user === 'ada'));
  bobOnC.pusher.disconnect();
  await until('vacated', () => changes().some((e) => e.event === 'channel_vacated'));
  // A duplicate would be in the log by the time the last change is: each
  // node's changes reach its PHP in order, and nodes a and b made theirs first.
  await until('bob removed', () => changes().some((e) => e.event === 'member_removed' && e.user === 'bob'));
  const counted = {};
  for (const e of changes()) counted[`${e.event} ${e.user ?? ''}`.trim()] = (counted[`${e.event} ${e.user ?? ''}`.trim()] ?? 0) + 1;
  assert.deepEqual(counted, {
    channel_occupied: 1,
    'member_added ada': 1,
    'member_added bob': 1,
    'member_removed ada': 1,
    'member_removed bob': 1,
    channel_vacated: 1,
  });
  const all = changes();
  assert.equal(all[0].event, 'channel_occupied', 'occupied first');
  assert.equal(all.at(-1).event, 'channel_vacated', 'vacated last');
});

test('the raw contract\'s presence keys never hold Pusher channels', async () => {
  const watcher = await member('a', 'watcher', 'presence-raw');
  await until('a pusher count in redis', () => redisCli('HGETALL', 'ws2fcgi:pusher:counts:a').includes('presence-raw'));
  const keys = redisCli('KEYS', 'ws2fcgi:presence:*');
  assert.ok(!keys.includes('\u0001'), `raw presence keys: ${JSON.stringify(keys)}`);
  watcher.pusher.disconnect();
});

test('a killed node\'s members are removed, once, by the nodes left', async () => {
  const doomedNode = await startNode('d');
  doomedNode.nodeId = 'd';
  nodes.d = doomedNode;
  await joined(doomedNode);
  const observer = await member('c', 'survivor', 'presence-doom');
  const pusher = client('d', { user: { id: 'doomed' } });
  await connected(pusher);
  await subscribed(pusher, 'presence-doom');
  await until('doomed added, seen on c', () => observer.seen.added.includes('doomed'));
  doomedNode.child.kill('SIGKILL');
  await doomedNode.exited;
  pusher.disconnect();
  await until('doomed removed after the node died', () => observer.seen.removed.includes('doomed'), DEADLINE_MS);
  assert.deepEqual(observer.seen.removed, ['doomed']);
  assert.deepEqual((await get('a', '/channels/presence-doom/users')).users.map((u) => u.id), ['survivor']);
  await until('the dead node forgotten', () => !redisCli('SMEMBERS', 'ws2fcgi:pusher:nodes').split('\n').includes('d'));
  observer.pusher.disconnect();
});

/** A raw client on `node` signed in as `id`. */
async function signedIn(node, id) {
  const raw = await RawClient.open(nodes[node].port);
  clients.push(raw);
  const socketId = await raw.socketId();
  const userData = JSON.stringify({ id });
  raw.send({ event: 'pusher:signin', data: { auth: `${APP.key}:${sign(`${socketId}::user::${userData}`)}`, user_data: userData } });
  await raw.next('pusher:signin_success');
  return raw;
}

test('sendToUser and terminateUserConnections reach the user\'s connections on every node', async () => {
  const [onA, onB, other] = [await signedIn('a', '7'), await signedIn('b', '7'), await signedIn('b', '8')];
  await sdk('c').sendToUser('7', 'notice', { text: 'hi' });
  for (const raw of [onA, onB]) assert.deepEqual((await raw.next('notice')).data, { text: 'hi' });
  assert.equal((await sdk('c').terminateUserConnections('7')).status, 200);
  for (const raw of [onA, onB]) {
    const closed = await until('the terminated connection to close', () => raw.ws.readyState === 3 && raw.closed);
    assert.equal(closed.code, 4009);
    assert.equal(raw.of('pusher:error')[0]?.data.code, 4009);
  }
  await sdk('a').sendToUser('8', 'notice', { text: 'still here' });
  assert.deepEqual((await other.next('notice')).data, { text: 'still here' }, 'another user keeps its connection');
});
