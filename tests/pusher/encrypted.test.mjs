// End-to-end encrypted channels (private-encrypted-): the server never has
// the key. Pusher's server SDK encrypts and authorizes (shared_secret, as
// Laravel's auth endpoint does with an encryption master key), ws2fcgi
// relays the ciphertext as is, pusher-js (its Node build) decrypts.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import Pusher from 'pusher';
import PusherJs from 'pusher-js'; // the Node build includes encryption (tweetnacl)

import { APP, Daemon, RawClient, connected, subscribed, until } from './support.mjs';

let daemon;
let sdk;
const clients = [];

before(async () => {
  daemon = await Daemon.start({ pusher: ['api_listen = "127.0.0.1:0"'] });
  const apiPort = await until('the API listener', () => daemon.log.match(/serving the Pusher HTTP API.*address=127\.0\.0\.1:(\d+)/)?.[1]);
  sdk = new Pusher({
    appId: APP.id,
    key: APP.key,
    secret: APP.secret,
    host: '127.0.0.1',
    port: apiPort,
    useTLS: false,
    encryptionMasterKeyBase64: randomBytes(32).toString('base64'),
  });
});

after(async () => {
  for (const c of clients) c.disconnect?.() ?? c.ws?.terminate();
  await daemon?.stop();
});

test('an encrypted channel: pusher-js decrypts what the SDK encrypted; the wire holds ciphertext only', async () => {
  const pusher = new PusherJs(APP.key, {
    wsHost: '127.0.0.1',
    wsPort: daemon.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: '',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => callback(null, sdk.authorizeChannel(socketId, channelName)),
    },
  });
  clients.push(pusher);
  await connected(pusher);
  const { channel } = await subscribed(pusher, 'private-encrypted-vault');
  const got = [];
  channel.bind('opened', (data) => got.push(data));

  // A raw subscriber sees what goes over the wire.
  const raw = await RawClient.open(daemon.port);
  clients.push(raw);
  const socketId = await raw.socketId();
  raw.send({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-vault', auth: sdk.authorizeChannel(socketId, 'private-encrypted-vault').auth } });
  await raw.next('pusher_internal:subscription_succeeded', 1, 'private-encrypted-vault');

  await sdk.trigger('private-encrypted-vault', 'opened', { pin: 'secret-4711' });
  await until('the decrypted event', () => got.length === 1);
  assert.deepEqual(got, [{ pin: 'secret-4711' }]);
  const onTheWire = await raw.next('opened', 1, 'private-encrypted-vault');
  assert.ok(onTheWire.data.ciphertext && onTheWire.data.nonce, JSON.stringify(onTheWire));
  assert.ok(!JSON.stringify(onTheWire).includes('secret-4711'), 'no plaintext on the wire');
});
