// The Pusher HTTP API with Pusher's own Node server SDK (`pusher`, as
// Laravel's and every PHP app's server side calls it through
// pusher-http-php): every call, on the WebSocket listener and on
// pusher.api_listen, and the requests it refuses (hand-signed where the SDK
// cannot be made to send them: stale timestamps, a wrong body_md5).

import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import Pusher from 'pusher';

import { APP, Daemon, until } from './support.mjs';

/** A second app: its key is unknown to the first. */
const OTHER = { id: '1002', key: 'other-key', secret: 'other-secret' };

let daemon;
before(async () => {
  daemon = await Daemon.start({
    pusher: [
      'api_listen = "127.0.0.1:0"',
      'max_batch_events = 3',
      'max_channels_per_event = 3',
      'max_message_bytes = 1000',
      '[[pusher.app]]',
      `id = "${OTHER.id}"`,
      `key = "${OTHER.key}"`,
      `secret = "${OTHER.secret}"`,
    ],
  });
  daemon.apiPort = Number(await until('the API listener', () => daemon.log.match(/serving the Pusher HTTP API.*address=127\.0\.0\.1:(\d+)/)?.[1]));
});
after(async () => {
  await daemon?.stop();
});

/** The SDK pointed at one of the daemon's listeners. */
function sdk({ port = daemon.apiPort, appId = APP.id, key = APP.key, secret = APP.secret } = {}) {
  return new Pusher({ appId, key, secret, host: '127.0.0.1', port: String(port), useTLS: false, timeout: 20_000 });
}

/** The SDK's error for a refused call: its status and body. */
async function refused(promise) {
  const error = await promise.then(
    () => assert.fail('the call should have been refused'),
    (e) => e,
  );
  assert.ok(error.status, `a RequestError with a status, not ${error}`);
  return { status: error.status, body: error.body };
}

/** A request signed by hand as the SDK signs it, with what the SDK cannot vary. */
async function signed({ method = 'POST', path, body, params = {}, timestamp, md5, key = APP.key, secret = APP.secret, port = daemon.apiPort }) {
  const all = { auth_key: key, auth_timestamp: timestamp ?? Math.floor(Date.now() / 1000), auth_version: '1.0', ...params };
  if (body !== undefined) all.body_md5 = md5 ?? createHash('md5').update(body).digest('hex');
  const query = Object.keys(all)
    .sort()
    .map((k) => `${k}=${all[k]}`)
    .join('&');
  const signature = createHmac('sha256', secret).update(`${method}\n${path}\n${query}`).digest('hex');
  const response = await fetch(`http://127.0.0.1:${port}${path}?${query}&auth_signature=${signature}`, {
    method,
    body,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
  });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

describe('every API call, on both listeners', () => {
  for (const listener of ['api_listen', 'the WebSocket listener']) {
    const port = () => (listener === 'api_listen' ? daemon.apiPort : daemon.port);

    test(`${listener}: trigger, with info`, async () => {
      const pusher = sdk({ port: port() });
      let response = await pusher.trigger('room', 'greeting', { text: 'hi' });
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), {});
      response = await pusher.trigger(['presence-a', 'room'], 'e', 'x', { info: 'subscription_count', socket_id: '1.2' });
      assert.deepEqual(await response.json(), {
        channels: { 'presence-a': { subscription_count: 0 }, room: { subscription_count: 0 } },
      });
      response = await pusher.trigger('presence-a', 'e', 'x', { info: 'user_count,subscription_count' });
      assert.deepEqual(await response.json(), { channels: { 'presence-a': { user_count: 0, subscription_count: 0 } } });
    });

    test(`${listener}: triggerBatch`, async () => {
      const pusher = sdk({ port: port() });
      const response = await pusher.triggerBatch([
        { channel: 'room', name: 'a', data: { n: 1 } },
        { channel: 'private-b', name: 'b', data: 'two' },
      ]);
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), {});
      const withInfo = await pusher.triggerBatch([{ channel: 'room', name: 'a', data: '1', info: 'subscription_count' }, { channel: 'room', name: 'b', data: '2' }]);
      assert.deepEqual(await withInfo.json(), { batch: [{ subscription_count: 0 }, {}] });
    });

    test(`${listener}: channels, channel, users, terminate_connections`, async () => {
      const pusher = sdk({ port: port() });
      const get = async (path, params) => {
        const response = await pusher.get({ path, params });
        assert.equal(response.status, 200);
        return response.json();
      };
      assert.deepEqual(await get('/channels'), { channels: {} });
      assert.deepEqual(await get('/channels', { filter_by_prefix: 'presence-', info: 'user_count' }), { channels: {} });
      assert.deepEqual(await get('/channels/room'), { occupied: false });
      assert.deepEqual(await get('/channels/room', { info: 'subscription_count' }), { occupied: false, subscription_count: 0 });
      assert.deepEqual(await get('/channels/presence-a', { info: 'user_count' }), { occupied: false, user_count: 0 });
      assert.deepEqual(await get('/channels/presence-a/users'), { users: [] });
      const response = await pusher.terminateUserConnections('42');
      assert.equal(response.status, 200);
    });
  }

  test('the WebSocket listener closes each API socket; api_listen keeps it alive', async () => {
    const sent = async (port) => (await signed({ method: 'GET', path: `/apps/${APP.id}/channels`, port })).headers.get('connection');
    assert.equal(await sent(daemon.port), 'close');
    assert.notEqual(await sent(daemon.apiPort), 'close');
  });
});

describe('refused as Pusher documents it', () => {
  test('a wrong secret: 401, the string to sign named', async () => {
    const { status, body } = await refused(sdk({ secret: 'not-the-secret' }).trigger('room', 'e', 'x'));
    assert.equal(status, 401);
    assert.match(body, /^Invalid signature: .*POST\\n\/apps\/1001\/events\\nauth_key=app-key/);
    assert.ok(!body.includes(APP.secret));
  });

  test("an unknown key (another app's): 401", async () => {
    const { status, body } = await refused(sdk({ key: OTHER.key, secret: OTHER.secret }).trigger('room', 'e', 'x'));
    assert.equal(status, 401);
    assert.match(body, /Unknown auth_key/);
  });

  test('a stale or future timestamp: 401; within the tolerance: accepted', async () => {
    const path = `/apps/${APP.id}/channels`;
    const now = Math.floor(Date.now() / 1000);
    for (const timestamp of [now - 700, now + 700]) {
      const { status, body } = await signed({ method: 'GET', path, timestamp });
      assert.equal(status, 401);
      assert.match(body, /^Timestamp expired: given timestamp \(\d+\) not within 600s of server time/);
    }
    assert.equal((await signed({ method: 'GET', path, timestamp: now - 500 })).status, 200);
    assert.equal((await signed({ method: 'GET', path, timestamp: 'yesterday' })).status, 401);
  });

  test('a wrong or missing body_md5: 401', async () => {
    const path = `/apps/${APP.id}/events`;
    const body = JSON.stringify({ name: 'e', channel: 'room', data: 'x' });
    const wrong = await signed({ path, body, md5: createHash('md5').update('other').digest('hex') });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /body_md5/);
    assert.equal((await signed({ path, body })).status, 200, 'the same request, rightly signed');
  });

  test('a missing parameter or another auth_version: 401', async () => {
    const path = `/apps/${APP.id}/channels`;
    const bare = await fetch(`http://127.0.0.1:${daemon.apiPort}${path}`);
    assert.equal(bare.status, 401);
    assert.match(await bare.text(), /Missing parameter: auth_key/);
    assert.equal((await signed({ method: 'GET', path, params: { auth_version: '2.0' } })).status, 401);
  });

  test('an unknown app id: 404; an unknown path: 404; a wrong method: 405', async () => {
    const { status, body } = await refused(sdk({ appId: '999' }).trigger('room', 'e', 'x'));
    assert.equal(status, 404);
    assert.match(body, /Unknown app `999`/);
    assert.equal((await signed({ method: 'GET', path: `/apps/${APP.id}/nothing` })).status, 404);
    const wrongMethod = await signed({ method: 'GET', path: `/apps/${APP.id}/events` });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
  });

  test('bad JSON or a bad event: 400, saying why', async () => {
    const path = `/apps/${APP.id}/events`;
    for (const [body, why] of [
      ['{', /Invalid JSON/],
      ['[]', /Invalid event/],
      [JSON.stringify({ name: 'e', channel: 'room', data: { not: 'a string' } }), /must be a string/],
      [JSON.stringify({ name: 'e', data: 'x' }), /Missing `channels`/],
      [JSON.stringify({ channel: 'room', data: 'x' }), /Missing event name/],
      [JSON.stringify({ name: 'e', channel: 'room 1', data: 'x' }), /channel `room 1`/],
      [JSON.stringify({ name: 'e', channel: 'room', data: 'x', socket_id: 'abc' }), /socket_id/],
      [JSON.stringify({ name: 'e', channel: 'room', data: 'x', info: 'user_count' }), /presence/],
    ]) {
      const answer = await signed({ path, body });
      assert.equal(answer.status, 400, body);
      assert.match(answer.body, why, body);
    }
  });

  test('the limits: channels per event and batch size 400, data over max_message_bytes 413', async () => {
    const pusher = sdk();
    let r = await refused(pusher.trigger(['a', 'b', 'c', 'd'], 'e', 'x'));
    assert.equal(r.status, 400);
    assert.match(r.body, /1 to 3 channels/);
    const event = { channel: 'room', name: 'e', data: 'x' };
    r = await refused(pusher.triggerBatch([event, event, event, event]));
    assert.equal(r.status, 400);
    assert.match(r.body, /1 to 3 events/);
    r = await refused(pusher.trigger('room', 'e', 'x'.repeat(1001)));
    assert.equal(r.status, 413);
    assert.match(r.body, /max_message_bytes/);
    r = await refused(pusher.triggerBatch([event, { ...event, data: 'x'.repeat(1001) }]));
    assert.equal(r.status, 413);
    assert.equal((await pusher.trigger('room', 'e', 'x'.repeat(1000))).status, 200, 'at the limit');
  });

  test('a body over the API limit: 413 before it is read', async () => {
    const body = 'x'.repeat(2 << 20);
    const answer = await signed({ path: `/apps/${APP.id}/events`, body });
    assert.equal(answer.status, 413);
  });

  test('info=user_count on a channel that is no presence channel: 400', async () => {
    const r = await refused(sdk().get({ path: '/channels', params: { info: 'user_count' } }));
    assert.equal(r.status, 400);
    assert.equal((await refused(sdk().get({ path: '/channels/room/users' }))).status, 400);
    assert.equal((await refused(sdk().get({ path: '/channels/room', params: { info: 'members' } }))).status, 400);
  });
});
