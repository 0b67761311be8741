// Events to PHP for a Pusher app (`script`, `auth = "php"`), with pusher-js
// unchanged and real php-fpm running tests/pusher/events.php, which appends
// every event it gets to a file this test reads: the open refused from the
// session cookie, subscriptions PHP authorizes (private, presence with the
// member PHP names, a refusal, an unusable answer), client events PHP lets
// through or refuses, the channels' changes (Pusher's webhooks) in order,
// the close event with its code, and php-fpm down.
//
// In Node, pusher-js sends no cookies; a browser sends its cookie jar with
// the handshake. `jar` plays the jar: pusher-js's Runtime hook that opens
// the WebSocket (its node build's faye-websocket client) adds it as the
// Cookie header.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { APP, Daemon, RawClient, connected, subscribed, until } from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-pusher-events-'));
const log = path.join(dir, 'events.log');
const script = path.join(dir, 'events.php');
writeFileSync(script, `<?php\nconst EVENTS_LOG = ${JSON.stringify(log)};\nrequire ${JSON.stringify(path.join(here, 'events.php'))};\n`);
writeFileSync(log, '');

let jar = '';
const original = Pusher.Runtime.createWebSocket;
Pusher.Runtime.createWebSocket = function (url) {
  const Client = this.getWebSocketAPI();
  return new Client(url, [], { headers: jar ? { Cookie: jar } : {} });
};

let daemon;
const clients = [];
const echoes = [];

before(async () => {
  daemon = await Daemon.start({ app: [`script = ${JSON.stringify(script)}`, 'auth = "php"'] });
});

after(async () => {
  for (const c of clients) c.disconnect();
  for (const e of echoes) e.disconnect();
  Pusher.Runtime.createWebSocket = original;
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The events PHP got so far, parsed. */
const events = () =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));

/** pusher-js as docs/pusher.md configures it for `auth = "php"`, sending `cookie`. */
function client(cookie, userId) {
  jar = cookie;
  const pusher = new Pusher(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: daemon.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: '',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ channelName }, callback) =>
        callback(null, channelName.startsWith('presence-') ? { auth: '', channel_data: JSON.stringify({ user_id: userId }) } : { auth: '' }),
    },
  });
  clients.push(pusher);
  return pusher;
}

/** Resolves with the subscription's error (rejects if it succeeds). */
const refusal = (pusher, name) =>
  subscribed(pusher, name).then(
    () => assert.fail(`${name} was accepted`),
    (e) => e.error,
  );

/** The first `pusher:error` pusher-js reports after now. */
function nextError(pusher) {
  return new Promise((resolve) => pusher.connection.bind('error', (e) => resolve(e.error ?? e)));
}

test('open: PHP sees the handshake (cookie, URI, address) and the socket id; its refusal is pusher:error 4009', async () => {
  const pusher = client('user=ada; theme=dark', 'ada');
  const socketId = await connected(pusher);
  const open = await until('the open event', () => events().find((e) => e.event === 'open' && e.socket === socketId));
  assert.equal(open.cookie, 'user=ada; theme=dark');
  assert.equal(open.app, APP.id);
  assert.equal(open.method, 'GET');
  assert.equal(open.remote, '127.0.0.1');
  assert.match(open.uri, new RegExp(`^/app/${APP.key}\\?protocol=7&`));
  assert.match(open.conn, /^[0-9a-f]{40}$/);
  assert.equal(open.control, daemon.control, 'WS_CONTROL_SOCKET, to publish from PHP');
  assert.equal(open.script, script);

  // Refused from the session: pusher-js is told 4009 and does not reconnect.
  const mallory = client('user=mallory; deny=1', 'mallory');
  const error = await nextError(mallory);
  assert.equal(error.data?.code, 4009);
  await until('pusher-js to give up', () => mallory.connection.state === 'disconnected');
  const before = events().filter((e) => e.cookie === 'user=mallory; deny=1').length;
  assert.equal(before, 1, 'one open event, no retry, no close event');

  // The open answer's Set-Cookie goes out on the 101, as in the raw contract.
  const accepted = await RawClient.open(daemon.port, undefined, { headers: { Cookie: 'user=eve' } });
  await accepted.socketId();
  assert.deepEqual(accepted.upgrade.headers['set-cookie'], ['seen=1; Path=/']);
  await accepted.close();

  // The refusal, byte for byte, with a raw client.
  const raw = await RawClient.open(daemon.port, undefined, { headers: { Cookie: 'deny=1' } });
  const frame = await raw.next('pusher:error');
  assert.equal(frame.data.code, 4009);
  assert.equal((await raw.closed).code, 4009);
  assert.equal(raw.of('pusher:connection_established').length, 0);
});

test('subscribe with auth = "php": private accepted, refused with its status, presence with the member PHP names', async () => {
  const pusher = client('user=bob', 'bob');
  const socketId = await connected(pusher);
  await subscribed(pusher, 'private-orders');
  const refused = await refusal(pusher, 'private-deny-secrets');
  assert.equal(refused.type, 'AuthError');
  assert.equal(refused.status, 403);

  const watcher = client('user=wes', 'wes');
  await connected(watcher);
  const { channel: watched } = await subscribed(watcher, 'presence-lobby');
  const joined = [];
  watched.bind('pusher:member_added', (member) => joined.push(member));
  const { data } = await subscribed(pusher, 'presence-lobby');
  // The members come from PHP's answers, not from what the clients sent.
  assert.deepEqual(data.me, { id: 'bob', info: { name: 'User bob' } });
  assert.deepEqual(data.members, { wes: { name: 'User wes' }, bob: { name: 'User bob' } });
  await until('member_added at the watcher', () => joined.length === 1);
  assert.deepEqual(joined[0], { id: 'bob', info: { name: 'User bob' } });

  const asked = events().filter((e) => e.event === 'subscribe' && e.socket === socketId);
  assert.deepEqual(
    asked.map((e) => [e.channel, e.method, e.meta]),
    [
      ['private-orders', 'POST', 'bob'],
      ['private-deny-secrets', 'POST', 'bob'],
      ['presence-lobby', 'POST', 'bob'],
    ],
    'asked in order, with the session and the open answer\'s metadata',
  );
  assert.equal(asked[2].body, JSON.stringify({ user_id: 'bob' }), "the client's channel_data is the body");

  // An answer that names no member is refused, with a reason the client sees.
  const bad = await refusal(pusher, 'presence-badjson-room');
  assert.equal(bad.status, 500);
  assert.match(bad.error, /not a JSON object/);
  await until('a log line', () => /names no member/.test(daemon.log));
  // Public channels are not asked (PHP hears of them as channel_occupied only).
  await subscribed(pusher, 'news');
  await until('news occupied', () => events().find((e) => e.event === 'channel_occupied' && e.channel === 'news'));
  assert.equal(events().filter((e) => e.event === 'subscribe' && e.channel === 'news').length, 0);
});

test('subscriptions of one connection are answered in the order they were sent', async () => {
  const pusher = client('user=cy', 'cy');
  await connected(pusher);
  const names = Array.from({ length: 12 }, (_, i) => (i % 3 === 2 ? `private-deny-${i}` : `private-c${i}`));
  const outcomes = [];
  for (const name of names) {
    const channel = pusher.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => outcomes.push(name));
    channel.bind('pusher:subscription_error', () => outcomes.push(name));
  }
  await until('every answer', () => outcomes.length === names.length);
  assert.deepEqual(outcomes, names);
});

test('client events: PHP lets them through or refuses them (pusher:error to the sender, not relayed)', async () => {
  const sender = client('user=sam', 'sam');
  const socketId = await connected(sender);
  const receiver = client('user=rae', 'rae');
  await connected(receiver);
  const { channel: out } = await subscribed(sender, 'private-chat');
  const { channel: inbox } = await subscribed(receiver, 'private-chat');
  const got = [];
  inbox.bind_global((event, data) => event.startsWith('client-') && got.push([event, data]));
  const error = nextError(sender);
  out.trigger('client-refused', { n: 1 });
  out.trigger('client-typing', { n: 2 });
  await until('the accepted event', () => got.length === 1);
  assert.deepEqual(got, [['client-typing', { n: 2 }]]);
  const refused = await error;
  assert.equal(refused.data?.code, 4300);
  assert.match(refused.data?.message, /client-refused: not relayed, refused by the app \(status 403\)/);
  const seen = events().filter((e) => e.event === 'client_event' && e.socket === socketId);
  assert.deepEqual(
    seen.map((e) => [e.channel, e.name, e.body, e.user]),
    [
      ['private-chat', 'client-refused', '{"n":1}', null],
      ['private-chat', 'client-typing', '{"n":2}', null],
    ],
  );
});

test('Laravel Echo with auth = "php": presence and private channels authorized by PHP, whispers through client_event', async () => {
  /** Echo as docs/pusher.md configures it for auth = "php", connected with `cookie`. */
  const echo = async (cookie, userId) => {
    jar = cookie;
    const e = new Echo({
      broadcaster: 'pusher',
      Pusher,
      key: APP.key,
      wsHost: '127.0.0.1',
      wsPort: daemon.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: '',
      disableStats: true,
      channelAuthorization: {
        customHandler: ({ channelName }, callback) =>
          callback(null, channelName.startsWith('presence-') ? { auth: '', channel_data: JSON.stringify({ user_id: userId }) } : { auth: '' }),
      },
    });
    echoes.push(e);
    await until('Echo connected', () => e.connector.pusher.connection.state === 'connected');
    return e;
  };
  const ann = await echo('user=ann', 'ann');
  const here = [];
  const joining = [];
  const whispers = [];
  ann
    .join('room.1')
    .here((users) => here.push(users))
    .joining((user) => joining.push(user))
    .listenForWhisper('typing', (w) => whispers.push(w));
  await until('here', () => here.length === 1);
  assert.deepEqual(here[0], [{ name: 'User ann' }]);

  const ben = await echo('user=ben', 'ben');
  const benHere = [];
  const room = ben.join('room.1').here((users) => benHere.push(users));
  await until('ben here', () => benHere.length === 1);
  assert.deepEqual(benHere[0].map((u) => u.name).sort(), ['User ann', 'User ben']);
  await until('joining', () => joining.length === 1);
  assert.deepEqual(joining, [{ name: 'User ben' }]);
  room.whisper('typing', { who: 'ben' });
  await until('the whisper', () => whispers.length === 1);
  assert.deepEqual(whispers, [{ who: 'ben' }]);

  const errors = [];
  ann.private('deny-x').error((status) => errors.push(status));
  await until('the refusal', () => errors.length === 1);
  assert.equal(errors[0].status, 403);
});

test('channel events (webhooks) reach PHP once per change, in order; close events carry their code', async () => {
  const channel = 'presence-webhooks';
  const a1 = client('user=a', 'a');
  const a1Id = await connected(a1);
  await subscribed(a1, channel);
  const a2 = client('user=a', 'a');
  await connected(a2);
  await subscribed(a2, channel);
  const b = client('user=b', 'b');
  const bId = await connected(b);
  await subscribed(b, channel);
  a1.disconnect();
  await until('the close of a1', () => events().find((e) => e.event === 'close' && e.socket === a1Id));
  const changes = () =>
    events()
      .filter((e) => e.channel === channel && !['subscribe', 'client_event'].includes(e.event))
      .map((e) => [e.event, e.user]);
  // a's last connection leaves, then b: two connections, so one after the other.
  a2.disconnect();
  await until("a's member_removed", () => changes().some(([event]) => event === 'member_removed'));
  b.unsubscribe(channel);
  const expected = [
    ['channel_occupied', null],
    ['member_added', 'a'],
    ['member_added', 'b'],
    ['member_removed', 'a'],
    ['member_removed', 'b'],
    ['channel_vacated', null],
  ];
  await until('every change', () => changes().length >= expected.length);
  assert.deepEqual(changes(), expected);
  const vacated = events().find((e) => e.event === 'channel_vacated' && e.channel === channel);
  assert.deepEqual([vacated.control, vacated.script, vacated.conn, vacated.cookie], [daemon.control, script, null, null]);

  const close = events().find((e) => e.event === 'close' && e.socket === a1Id);
  assert.equal(close.code, '1000', 'pusher-js closes with 1000');
  assert.equal(close.cookie, 'user=a', 'the close event has the session too');
  b.disconnect();
  await until('the close of b', () => events().find((e) => e.event === 'close' && e.socket === bId));

  // A close code of the client's own choosing reaches PHP as sent.
  jar = 'user=raw';
  const raw = await RawClient.open(daemon.port, undefined, { headers: { Cookie: 'user=raw' } });
  const rawId = await raw.socketId();
  raw.ws.close(4321, 'gone fishing');
  const rawClose = await until('the raw close', () => events().find((e) => e.event === 'close' && e.socket === rawId));
  assert.deepEqual([rawClose.code, rawClose.reason], ['4321', 'gone fishing']);
});

test('shutdown: PHP gets the close events (1001) and the channels\' changes before the daemon exits', async () => {
  const own = path.join(dir, 'shutdown.log');
  const ownScript = path.join(dir, 'shutdown.php');
  writeFileSync(ownScript, `<?php\nconst EVENTS_LOG = ${JSON.stringify(own)};\nrequire ${JSON.stringify(path.join(here, 'events.php'))};\n`);
  writeFileSync(own, '');
  const stopping = await Daemon.start({ app: [`script = ${JSON.stringify(ownScript)}`, 'auth = "php"'] });
  const read = () =>
    readFileSync(own, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
  try {
    const raw = await RawClient.open(stopping.port, undefined, { headers: { Cookie: 'user=zed' } });
    const socketId = await raw.socketId();
    raw.send({ event: 'pusher:subscribe', data: { channel: 'presence-bye' } });
    await raw.next('pusher_internal:subscription_succeeded');
    await until('member_added', () => read().find((e) => e.event === 'member_added'));
    await stopping.stop();
    assert.equal((await raw.closed).code, 1001);
    const seen = read();
    const close = seen.find((e) => e.event === 'close' && e.socket === socketId);
    assert.deepEqual([close?.code, close?.reason], ['1001', 'server shutdown']);
    assert.deepEqual(
      seen.filter((e) => e.channel === 'presence-bye' && e.event !== 'subscribe').map((e) => [e.event, e.user]),
      [
        ['channel_occupied', null],
        ['member_added', 'zed'],
        ['member_removed', 'zed'],
        ['channel_vacated', null],
      ],
    );
  } finally {
    await stopping.stop();
  }
});

test('a full admission queue of open events turns a Pusher client away with 4100', async () => {
  const own = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-pusher-queue-'));
  const flag = path.join(own, 'go');
  const queued = await Daemon.start({
    dir: own,
    app: [`script = ${JSON.stringify(script)}`],
    fpm: ['address = "managed"', 'pool_size = 4', 'open_queue = 1', '[fpm.managed]', `run_dir = ${JSON.stringify(path.join(own, 'fpm'))}`],
  });
  try {
    // The first open waits in PHP until the flag exists: it holds the queue's one place.
    const held = RawClient.open(queued.port, undefined, { headers: { Cookie: `hold=${flag}` } });
    await until('the held open in PHP', () => events().find((e) => e.event === 'open' && e.cookie === `hold=${flag}`));
    const turned = await RawClient.open(queued.port);
    const frame = await turned.next('pusher:error');
    assert.equal(frame.data.code, 4100);
    assert.match(frame.data.message, /^Over capacity; retry after \d+s$/);
    assert.equal((await turned.closed).code, 4100);
    writeFileSync(flag, '');
    const first = await held;
    await first.socketId();
    await first.close();
  } finally {
    writeFileSync(flag, '');
    await queued.stop();
    rmSync(own, { recursive: true, force: true });
  }
});

test('php-fpm down: the open is refused with pusher:error 4200 and pusher-js reconnects', async () => {
  const down = await Daemon.start({
    app: [`script = ${JSON.stringify(script)}`],
    fpm: [`address = ${JSON.stringify(`unix:${path.join(dir, 'no-php-fpm.sock')}`)}`, 'retry_window = "300ms"'],
  });
  try {
    const raw = await RawClient.open(down.port);
    const frame = await raw.next('pusher:error');
    assert.equal(frame.data.code, 4200);
    assert.equal((await raw.closed).code, 4200);
    assert.equal(raw.of('pusher:connection_established').length, 0);

    jar = '';
    const pusher = new Pusher(APP.key, {
      wsHost: '127.0.0.1',
      wsPort: down.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: '',
      disableStats: true,
    });
    try {
      const codes = [];
      pusher.connection.bind('error', (e) => codes.push(e.error?.data?.code));
      await until('two refusals: pusher-js tried again', () => codes.length >= 2);
      assert.deepEqual(codes.slice(0, 2), [4200, 4200]);
      assert.notEqual(pusher.connection.state, 'connected');
    } finally {
      pusher.disconnect();
    }
    assert.match(down.log, /pusher open event failed/);
  } finally {
    await down.stop();
  }
});
