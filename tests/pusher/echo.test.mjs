// Laravel Echo (broadcaster 'pusher', with pusher-js) against the daemon,
// configured as Laravel's resources/js/echo.js configures it: events by
// their class name, presence here/joining/leaving, whispers.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import Echo from 'laravel-echo';
import PusherJs from 'pusher-js';

import { APP, Daemon, sign, until } from './support.mjs';

let daemon;
const echoes = [];

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  for (const e of echoes) e.disconnect();
  await daemon?.stop();
});

/** An Echo client; channels are signed as Laravel's /broadcasting/auth signs them. */
function echo(user) {
  const e = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherJs,
    key: APP.key,
    wsHost: '127.0.0.1',
    wsPort: daemon.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: '',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        if (channelName.startsWith('presence-')) {
          const channelData = JSON.stringify({ user_id: user.id, user_info: { name: user.name } });
          callback(null, { auth: `${APP.key}:${sign(`${socketId}:${channelName}:${channelData}`)}`, channel_data: channelData });
        } else {
          callback(null, { auth: `${APP.key}:${sign(`${socketId}:${channelName}`)}` });
        }
      },
    },
  });
  echoes.push(e);
  return e;
}

test("Echo hears a broadcast event by its class name on a private channel", async () => {
  const e = echo({ id: 1, name: 'Ann' });
  const got = [];
  e.private('orders.7').listen('OrderShipped', (event) => got.push(event));
  await until('connected and subscribed', () => e.connector.pusher.channel('private-orders.7')?.subscribed);
  // What Laravel's broadcast(new OrderShipped($order)) publishes.
  const reply = await daemon.publish(['private-orders.7'], 'App\\Events\\OrderShipped', { order: { id: 7 } });
  assert.deepEqual(reply, { ok: true, delivered: 1 });
  await until('the event', () => got.length === 1);
  assert.deepEqual(got, [{ order: { id: 7 } }]);
});

test('Echo presence: here, joining, leaving; and whispers between members', async () => {
  const ann = echo({ id: 1, name: 'Ann' });
  const here = [];
  const joined = [];
  const left = [];
  const whispers = [];
  ann
    .join('chat.1')
    .here((users) => here.push(users))
    .joining((user) => joined.push(user))
    .leaving((user) => left.push(user))
    .listenForWhisper('typing', (w) => whispers.push(w));
  await until('here', () => here.length === 1);
  assert.deepEqual(here[0], [{ name: 'Ann' }]);

  const bob = echo({ id: 2, name: 'Bob' });
  const bobHere = [];
  const bobChannel = bob.join('chat.1').here((users) => bobHere.push(users));
  await until('bob here', () => bobHere.length === 1);
  assert.deepEqual(bobHere[0].map((u) => u.name).sort(), ['Ann', 'Bob']);
  await until('joining', () => joined.length === 1);
  assert.deepEqual(joined, [{ name: 'Bob' }]);

  bobChannel.whisper('typing', { who: 'Bob' });
  await until('the whisper', () => whispers.length === 1);
  assert.deepEqual(whispers, [{ who: 'Bob' }]);

  bob.leave('chat.1');
  await until('leaving', () => left.length === 1);
  assert.deepEqual(left, [{ name: 'Bob' }]);
});
