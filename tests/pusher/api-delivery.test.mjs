// What the Pusher HTTP API does to connected clients: events triggered with
// Pusher's own server SDK (`pusher`) reach pusher-js subscribers, not the
// connection named by socket_id; the channel and presence counts are what
// is subscribed; sendToUser and terminateUserConnections reach the
// connections signed in as the user.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import Pusher from 'pusher';

import { APP, DEADLINE_MS, Daemon, RawClient, connected, pusherClient, sign, subscribed, until } from './support.mjs';

let daemon;
let apiPort;
const clients = [];

before(async () => {
  daemon = await Daemon.start({ pusher: ['api_listen = "127.0.0.1:0"'] });
  apiPort = Number(await until('the API listener', () => daemon.log.match(/serving the Pusher HTTP API.*address=127\.0\.0\.1:(\d+)/)?.[1]));
});

after(async () => {
  for (const c of clients) c.disconnect?.() ?? c.close?.();
  await daemon?.stop();
});

function client(options) {
  const c = pusherClient(daemon.port, options);
  clients.push(c);
  return c;
}

/** The server SDK, on api_listen or (`port`) the WebSocket listener. */
function sdk(port = apiPort) {
  return new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(port), useTLS: false, timeout: 20_000 });
}

async function get(path, params) {
  const response = await sdk().get({ path, params });
  assert.equal(response.status, 200);
  return response.json();
}

test('trigger reaches every subscriber but the socket_id excluded, on both listeners', async () => {
  const [a, b] = [client(), client()];
  const excluded = await connected(b);
  await connected(a);
  const got = { a: [], b: [] };
  for (const [name, pusher] of [['a', a], ['b', b]]) {
    const { channel } = await subscribed(pusher, 'news');
    channel.bind('headline', (data) => got[name].push(data.n));
  }
  await sdk().trigger('news', 'headline', { n: 1 }, { socket_id: excluded });
  await sdk(daemon.port).trigger(['news', 'other'], 'headline', { n: 2 });
  await until('both events at a, the second at b', () => got.a.length === 2 && got.b.length === 1);
  assert.deepEqual(got, { a: [1, 2], b: [2] }, 'b, excluded from the first, got the second only');
  const batch = await sdk().triggerBatch([
    { channel: 'news', name: 'headline', data: { n: 3 } },
    { channel: 'news', name: 'headline', data: { n: 4 }, socket_id: excluded },
  ]);
  assert.equal(batch.status, 200);
  await until('the batch', () => got.a.length === 4 && got.b.length === 2);
  assert.deepEqual(got, { a: [1, 2, 3, 4], b: [2, 3] });
});

test('channels, a channel and its users: what is subscribed, each presence user once', async () => {
  const one = { id: '1', info: { name: 'Ada' } };
  const connections = [client({ user: one }), client({ user: one }), client({ user: { id: '2' } })];
  for (const c of connections) {
    await connected(c);
    await subscribed(c, 'presence-room');
  }
  const listed = await get('/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
  assert.deepEqual(listed, { channels: { 'presence-room': { user_count: 2 } } });
  const all = await get('/channels', { info: 'subscription_count' });
  assert.equal(all.channels['presence-room'].subscription_count, 3);
  assert.ok(!Object.keys(all.channels).some((name) => name.startsWith('#')), 'user channels are not listed');
  assert.deepEqual(await get('/channels/presence-room', { info: 'user_count,subscription_count' }), {
    occupied: true,
    user_count: 2,
    subscription_count: 3,
  });
  const { users } = await get('/channels/presence-room/users');
  assert.deepEqual(users.map((u) => u.id).sort(), ['1', '2']);
  const triggered = await sdk().trigger('presence-room', 'e', 'x', { info: 'user_count,subscription_count' });
  assert.deepEqual(await triggered.json(), { channels: { 'presence-room': { user_count: 2, subscription_count: 3 } } });

  connections[0].unsubscribe('presence-room');
  connections[2].unsubscribe('presence-room');
  await until('user 2 gone', async () => (await get('/channels/presence-room/users')).users.length === 1);
  assert.deepEqual(await get('/channels/presence-room', { info: 'user_count,subscription_count' }), {
    occupied: true,
    user_count: 1,
    subscription_count: 1,
  });
});

/** `promise`, or a failure past the deadline. */
function within(promise, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${DEADLINE_MS} ms waiting for ${what}`)), DEADLINE_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A raw client signed in as `id`. */
async function signedIn(id) {
  const raw = await RawClient.open(daemon.port);
  clients.push(raw);
  const socketId = await raw.socketId();
  const userData = JSON.stringify({ id });
  raw.send({ event: 'pusher:signin', data: { auth: `${APP.key}:${sign(`${socketId}::user::${userData}`)}`, user_data: userData } });
  await raw.next('pusher:signin_success');
  return raw;
}

test('sendToUser reaches the connections signed in as the user; terminateUserConnections closes them', async () => {
  const [first, second, other] = [await signedIn('7'), await signedIn('7'), await signedIn('8')];
  await sdk().sendToUser('7', 'notice', { text: 'hi' });
  for (const raw of [first, second]) {
    const frame = await raw.next('notice');
    assert.deepEqual(frame.data, { text: 'hi' });
  }
  const terminated = await sdk().terminateUserConnections('7');
  assert.equal(terminated.status, 200);
  for (const raw of [first, second]) {
    const closed = await within(raw.closed, 'the terminated connection to close');
    assert.equal(closed.code, 4009);
    assert.equal(raw.of('pusher:error')[0]?.data.code, 4009);
  }
  await sdk().sendToUser('8', 'notice', { text: 'still here' });
  assert.deepEqual((await other.next('notice')).data, { text: 'still here' }, 'another user keeps its connection');
});
