// What the Pusher tests share: the real ws2fcgi daemon (with its managed
// php-fpm running app.php for the raw contract beside the Pusher endpoint),
// pusher-js clients pointed at it, raw Pusher-protocol clients over `ws`,
// signatures made with the app secret the way an app's auth endpoint
// (Laravel's /broadcasting/auth) makes them, and polling with a deadline.
//
// The binary: $WS2FCGI_BIN when set; else `cargo build` and
// target/<profile>/ws2fcgi ($WS2FCGI_PROFILE, default debug; $CARGO_TARGET_DIR honoured).

import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Pusher from 'pusher-js';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');

/** Generous: the machine may be loaded. */
export const DEADLINE_MS = 20_000;

export const APP = { id: '1001', key: 'app-key', secret: 'app-secret-5b2c' };

let binary;

/** The ws2fcgi binary, built once per test file when needed. */
export function ws2fcgiBinary() {
  if (binary) return binary;
  if (process.env.WS2FCGI_BIN) return (binary = process.env.WS2FCGI_BIN);
  const profile = process.env.WS2FCGI_PROFILE ?? 'debug';
  if (profile !== 'debug' && profile !== 'release') throw new Error('WS2FCGI_PROFILE must be debug or release');
  const args = ['build', '--quiet', '--bin', 'ws2fcgi', ...(profile === 'release' ? ['--release'] : [])];
  const built = spawnSync('cargo', args, { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
  if (built.status !== 0) throw new Error(`cargo ${args.join(' ')} failed (${built.status ?? built.signal})`);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target');
  return (binary = path.join(target, profile, 'ws2fcgi'));
}

/** Polls `check` (which may be async) until it returns a truthy value; throws after `ms`. */
export async function until(what, check, ms = DEADLINE_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A running daemon in a temporary directory; `pusher` is extra [pusher] lines, `websocket` extra [websocket] lines. */
export class Daemon {
  static async start({ pusher = [], websocket = [] } = {}) {
    const daemon = new Daemon();
    daemon.dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-pusher-'));
    daemon.control = path.join(daemon.dir, 'control.sock');
    const config = path.join(daemon.dir, 'ws2fcgi.toml');
    writeFileSync(
      config,
      [
        'listen = ["127.0.0.1:0"]',
        `script = ${JSON.stringify(path.join(here, 'app.php'))}`,
        '[fpm]',
        'address = "managed"',
        'pool_size = 2',
        '[fpm.managed]',
        `run_dir = ${JSON.stringify(path.join(daemon.dir, 'fpm'))}`,
        '[control]',
        `socket = ${JSON.stringify(daemon.control)}`,
        '[shutdown]',
        'drain_timeout = "5s"',
        '[websocket]',
        ...websocket,
        '[pusher]',
        ...pusher,
        '[[pusher.app]]',
        `id = "${APP.id}"`,
        `key = "${APP.key}"`,
        `secret = "${APP.secret}"`,
        '',
      ].join('\n'),
    );
    daemon.logFile = path.join(daemon.dir, 'ws2fcgi.log');
    const logFd = openSync(daemon.logFile, 'a');
    const child = spawn(ws2fcgiBinary(), ['--config', config], {
      env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', logFd],
    });
    closeSync(logFd);
    daemon.child = child;
    daemon.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    running.add(daemon);
    try {
      const port = await until('the daemon to listen', () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`ws2fcgi exited at start (${child.exitCode ?? child.signalCode}):\n${daemon.log}`);
        }
        return daemon.log.match(/accepting WebSocket clients.*address=127\.0\.0\.1:(\d+)/)?.[1];
      });
      daemon.port = Number(port);
    } catch (error) {
      await daemon.stop();
      throw error;
    }
    return daemon;
  }

  get log() {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Resident memory of the daemon, in KiB. */
  rssKiB() {
    const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
  }

  /** One control request on a connection of its own; its reply. */
  request(object) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(this.control);
      let buffer = '';
      socket.setEncoding('utf8');
      socket.on('error', reject);
      socket.on('data', (chunk) => {
        buffer += chunk;
        const newline = buffer.indexOf('\n');
        if (newline >= 0) {
          socket.end();
          resolve(JSON.parse(buffer.slice(0, newline)));
        }
      });
      socket.write(`${JSON.stringify(object)}\n`);
    });
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

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      let timer;
      const result = await Promise.race([this.exited, new Promise((resolve) => (timer = setTimeout(resolve, DEADLINE_MS)))]);
      clearTimeout(timer);
      if (!result) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
    return this.exited;
  }
}

const running = new Set();
process.once('exit', () => {
  for (const daemon of running) daemon.child.kill('SIGKILL');
});

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
  static async open(port, pathAndQuery = `/app/${APP.key}?protocol=7&client=js&version=8.6.0`) {
    const client = new RawClient();
    client.frames = [];
    client.ws = new WebSocket(`ws://127.0.0.1:${port}${pathAndQuery}`);
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
