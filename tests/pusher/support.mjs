// What the Pusher tests share: the real ws2fcgi daemon (with its managed
// php-fpm running app.php for the raw contract beside the Pusher endpoint),
// pusher-js clients pointed at it, raw Pusher-protocol clients over `ws`,
// signatures made with the app secret the way an app's auth endpoint
// (Laravel's /broadcasting/auth) makes them, and polling with a deadline.
//
// The daemon and polling are tests/js/support.mjs's (node builtins only, so
// nothing of tests/js needs installing).

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Pusher from 'pusher-js';
import { Daemon as BaseDaemon, DEADLINE_MS, until } from '../js/support.mjs';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
export { DEADLINE_MS, Redis, repo, until } from '../js/support.mjs';

export const APP = { id: '1001', key: 'app-key', secret: 'app-secret-5b2c' };

/**
 * The daemon of tests/js/support.mjs with one Pusher app (`APP`) and
 * `app.php` for the raw contract; `app` are more lines of the app's table
 * (`script`, `auth`), `fpm` the lines of [fpm] (null: managed), `dir` its
 * directory (default: a new temporary one); `cluster` makes it a node of a
 * cluster (`{ redis, nodeId, nodeTtl }`: the URL of a `Redis`, this node's
 * id, `cluster.node_ttl`); `admin` a port for /metrics (0: any; null: none).
 */
export class Daemon extends BaseDaemon {
  static start({ pusher = [], websocket = [], app = [], fpm = null, dir, cluster = null, admin = null } = {}) {
    return super.start({
      dir,
      admin,
      history: null,
      script: path.join(here, 'app.php'),
      websocket,
      fpm,
      extra: [
        ...(cluster === null
          ? []
          : [
              '[cluster]',
              `redis = ${JSON.stringify(cluster.redis)}`,
              `node_id = ${JSON.stringify(cluster.nodeId)}`,
              `node_ttl = ${JSON.stringify(cluster.nodeTtl ?? '15s')}`,
            ]),
        '[pusher]',
        ...pusher,
        '[[pusher.app]]',
        `id = "${APP.id}"`,
        `key = "${APP.key}"`,
        `secret = "${APP.secret}"`,
        ...app,
      ],
    });
  }

  /** Resident memory of the daemon, in KiB. */
  rssKiB() {
    const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
  }

  /** Publishes a Pusher event through the control socket. */
  publish(channels, event, data, socketId) {
    return this.request({
      op: 'pusher_publish',
      app: APP.id,
      channels,
      event,
      data: typeof data === 'string' ? data : JSON.stringify(data),
      ...(socketId ? { socket_id: socketId } : {}),
    });
  }
}

/** HMAC-SHA256 hex, as pusher-http-php and Laravel sign. */
export const sign = (text, secret = APP.secret) => createHmac('sha256', secret).update(text).digest('hex');

/**
 * A pusher-js client as an app configures it for ws2fcgi. Private and
 * presence channels are authorized the way an app's auth endpoint would:
 * signed with the app secret; `user` is the presence member / signed-in user.
 */
export function pusherClient(port, { user = null, forge = false, key = APP.key, host = '127.0.0.1' } = {}) {
  return new Pusher(key, {
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: '',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const secret = forge ? 'not-the-secret' : APP.secret;
        if (channelName.startsWith('presence-')) {
          const channelData = JSON.stringify({ user_id: user.id, user_info: user.info ?? {} });
          callback(null, { auth: `${APP.key}:${sign(`${socketId}:${channelName}:${channelData}`, secret)}`, channel_data: channelData });
        } else {
          callback(null, { auth: `${APP.key}:${sign(`${socketId}:${channelName}`, secret)}` });
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        const userData = JSON.stringify({ id: user.id, name: user.info?.name ?? '' });
        callback(null, { auth: `${APP.key}:${sign(`${socketId}::user::${userData}`)}`, user_data: userData });
      },
    },
  });
}

/** Resolves when a pusher-js client is connected; its socket id. */
export function connected(pusher) {
  return until('pusher-js to connect', () => pusher.connection.state === 'connected' && pusher.connection.socket_id);
}

/** Subscribes and resolves on pusher:subscription_succeeded (with its data); rejects on an error. */
export function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', (data) => resolve({ channel, data }));
    channel.bind('pusher:subscription_error', (error) => reject(Object.assign(new Error('subscription_error'), { error })));
  });
}

/**
 * A raw Pusher-protocol client over `ws`: `frames` holds every frame
 * received, parsed (its `data` too when it is a JSON string).
 */
export class RawClient {
  static async open(port, pathAndQuery = `/app/${APP.key}?protocol=7&client=js&version=8.6.0`, { headers } = {}) {
    const client = new RawClient();
    client.frames = [];
    client.ws = new WebSocket(`ws://127.0.0.1:${port}${pathAndQuery}`, { headers });
    client.closed = new Promise((resolve) => client.ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
    client.ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (typeof frame.data === 'string') {
        try {
          frame.data = JSON.parse(frame.data);
        } catch {}
      }
      client.frames.push(frame);
    });
    client.ws.on('error', () => {});
    client.ws.once('upgrade', (response) => (client.upgrade = response));
    await new Promise((resolve, reject) => {
      client.ws.once('open', resolve);
      client.ws.once('error', reject);
    });
    return client;
  }

  send(object) {
    this.ws.send(typeof object === 'string' ? object : JSON.stringify(object));
  }

  /** The frames with this event (and channel, when given). */
  of(event, channel) {
    return this.frames.filter((f) => f.event === event && (channel === undefined || f.channel === channel));
  }

  /** Waits for the n-th frame (1-based) with this event. */
  async next(event, n = 1, channel) {
    return until(`${n} × ${event}`, () => this.of(event, channel)[n - 1]);
  }

  async socketId() {
    return (await this.next('pusher:connection_established')).data.socket_id;
  }

  close() {
    this.ws.close();
    return this.closed;
  }
}
