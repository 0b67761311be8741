// What the integration tests share: the real ws2fcgi daemon with its managed
// php-fpm running app.php, a control-socket client, a TCP proxy that can cut
// or freeze connections, and polling with a deadline.
//
// The binary: $WS2FCGI_BIN when set; else `cargo build` (with --release when
// WS2FCGI_PROFILE=release) and target/<profile>/ws2fcgi, $CARGO_TARGET_DIR
// honoured. scripts/test exports WS2FCGI_PROFILE=debug, so its cargo test
// build is reused.

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');

/** Generous: the machine may be loaded. */
export const DEADLINE_MS = 20_000;

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

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A running daemon in a temporary directory. `history` is the TOML of the
 * [history] table (lines after the header; null: none), `pingInterval` the
 * websocket.ping_interval (the heartbeat), `admin` a port for the admin
 * listener (/metrics; null: none), `script` the raw contract's PHP script,
 * `websocket` more lines of [websocket], `extra` whole tables at the end,
 * `fpm` the lines of [fpm] (null: a managed php-fpm running the scripts).
 */
export class Daemon {
  static async start({
    history = 'size = 100000\nttl = "5m"\nmax_bytes = "64MiB"',
    pingInterval = '30s',
    dir,
    extra = [],
    admin = null,
    script = path.join(here, 'app.php'),
    websocket = [],
    fpm = null,
  } = {}) {
    const daemon = new this();
    daemon.dir = dir ?? mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-js-'));
    daemon.ownsDir = !dir;
    daemon.control = path.join(daemon.dir, 'control.sock');
    const config = path.join(daemon.dir, 'ws2fcgi.toml');
    writeFileSync(
      config,
      [
        'listen = ["127.0.0.1:0"]',
        `script = ${JSON.stringify(script)}`,
        ...(admin === null ? [] : [`admin = "127.0.0.1:${admin}"`]),
        '[fpm]',
        ...(fpm ?? ['address = "managed"', 'pool_size = 4', '[fpm.managed]', `run_dir = ${JSON.stringify(path.join(daemon.dir, 'fpm'))}`]),
        '[control]',
        `socket = ${JSON.stringify(daemon.control)}`,
        '[websocket]',
        `ping_interval = ${JSON.stringify(pingInterval)}`,
        'idle_timeout = "120s"',
        ...websocket,
        '[shutdown]',
        'drain_timeout = "5s"',
        ...(history === null ? [] : ['[history]', history]),
        ...extra,
        '',
      ].join('\n'),
    );
    // stderr to a file: php-fpm (its log is on ws2fcgi's stderr) cannot open
    // /proc/self/fd/2 when it is a socket, which is what node's 'pipe' is.
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
      daemon.url = `ws://127.0.0.1:${port}`;
    } catch (error) {
      await daemon.stop();
      throw error;
    }
    return daemon;
  }

  /** What it logged so far. */
  get log() {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** One control request, on a connection of its own; its reply. */
  async request(object) {
    const client = await ControlClient.connect(this.control);
    try {
      return await client.request(object);
    } finally {
      client.close();
    }
  }

  /** SIGTERM, SIGKILL if it is not gone within the deadline; removes its directory. */
  async stop({ keepDir = false } = {}) {
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
    if (this.ownsDir && !keepDir) rmSync(this.dir, { recursive: true, force: true });
    return this.exited;
  }
}

/** A redis-server of the test's own on a Unix socket in a temporary directory: no port to pick, no persistence. */
export class Redis {
  static async start() {
    const redis = new Redis();
    redis.dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-js-redis-'));
    redis.socket = path.join(redis.dir, 'redis.sock');
    redis.url = `unix://${redis.socket}`;
    redis.child = spawn(
      'redis-server',
      ['--port', '0', '--unixsocket', redis.socket, '--save', '', '--appendonly', 'no', '--dir', redis.dir],
      { stdio: 'ignore' },
    );
    redis.exited = new Promise((resolve) => redis.child.once('exit', resolve));
    redis.child.once('error', () => {});
    running.add(redis);
    await until('redis-server to answer PING', async () => {
      if (redis.child.exitCode !== null) throw new Error('redis-server exited at start (is it installed?)');
      return new Promise((resolve) => {
        const probe = net.createConnection(redis.socket);
        probe.once('error', () => resolve(false));
        probe.once('data', (data) => {
          probe.destroy();
          resolve(String(data).startsWith('+PONG'));
        });
        probe.write('PING\r\n');
      });
    });
    return redis;
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The php-fpm binary: $PHP_FPM, else the first of the usual names found. */
function phpFpmBinary() {
  if (process.env.PHP_FPM) return process.env.PHP_FPM;
  for (const candidate of ['php-fpm', 'php-fpm8.4', 'php-fpm8.3', 'php-fpm8.2']) {
    for (const dir of ['/usr/sbin', '/usr/local/sbin', ...(process.env.PATH ?? '').split(':')]) {
      const file = path.join(dir, candidate);
      if (existsSync(file)) return file;
    }
  }
  throw new Error('php-fpm not found: install it (scripts/test does) or set PHP_FPM');
}

/**
 * A php-fpm of the test's own (a static pool of `children` on a Unix socket
 * in a temporary directory), for a daemon that must not manage its own: a
 * SIGUSR2 handover needs an external pool.
 */
export class Fpm {
  static async start(children = 4) {
    const fpm = new Fpm();
    fpm.dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-js-fpm-'));
    fpm.socket = path.join(fpm.dir, 'fpm.sock');
    const root = process.getuid?.() === 0;
    const conf = path.join(fpm.dir, 'php-fpm.conf');
    writeFileSync(
      conf,
      [
        '[global]',
        `error_log = ${path.join(fpm.dir, 'fpm.log')}`,
        `pid = ${path.join(fpm.dir, 'fpm.pid')}`,
        'daemonize = no',
        '[js]',
        ...(root ? ['user = root', 'group = root'] : []),
        `listen = ${fpm.socket}`,
        'pm = static',
        `pm.max_children = ${children}`,
        '',
      ].join('\n'),
    );
    const args = ['--nodaemonize', '--fpm-config', conf, ...(root ? ['--allow-to-run-as-root'] : [])];
    fpm.child = spawn(phpFpmBinary(), args, { stdio: 'ignore' });
    fpm.exited = new Promise((resolve) => fpm.child.once('exit', resolve));
    fpm.child.once('error', () => {});
    running.add(fpm);
    await until('php-fpm to accept', async () => {
      if (fpm.child.exitCode !== null) throw new Error(`php-fpm exited at start:\n${fpm.log}`);
      return new Promise((resolve) => {
        const probe = net.createConnection(fpm.socket);
        probe.once('error', () => resolve(false));
        probe.once('connect', () => {
          probe.destroy();
          resolve(true);
        });
      });
    });
    return fpm;
  }

  get log() {
    try {
      return readFileSync(path.join(this.dir, 'fpm.log'), 'utf8');
    } catch {
      return '';
    }
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      let timer;
      const done = await Promise.race([this.exited.then(() => true), new Promise((resolve) => (timer = setTimeout(resolve, DEADLINE_MS)))]);
      clearTimeout(timer);
      if (!done) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    running.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const running = new Set();
// A last resort when node exits before a test's after() ran.
process.once('exit', () => {
  for (const daemon of running) daemon.child.kill('SIGKILL');
});

/** A connection to the control socket: JSON lines out, replies in order. */
export class ControlClient {
  static connect(socketPath) {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new ControlClient(socket));
      });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.waiting = []; // {resolve, reject} per request in flight, in order
    this.buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      this.buffer += chunk;
      let newline;
      while ((newline = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, newline);
        this.buffer = this.buffer.slice(newline + 1);
        this.waiting.shift()?.resolve(JSON.parse(line));
      }
    });
    const fail = (error) => {
      for (const w of this.waiting.splice(0)) w.reject(error ?? new Error('control socket closed'));
    };
    socket.on('error', fail);
    socket.on('close', () => fail());
  }

  /** Writes one request (without waiting for earlier replies); resolves with its reply. */
  request(object) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(`${JSON.stringify(object)}\n`);
    });
  }

  close() {
    this.socket.end();
  }
}

/**
 * A TCP proxy between clients and the daemon, to do to a connection what a
 * network does: `cut()` drops every connection without a close frame (both
 * sockets reset), `freeze()` stops forwarding without closing anything (a
 * half-open connection), `refuse` drops new connections at once.
 */
export class Proxy {
  static async start(targetPort) {
    const proxy = new Proxy();
    proxy.targetPort = targetPort;
    proxy.pairs = new Set();
    proxy.accepted = 0;
    proxy.refuse = false;
    proxy.server = net.createServer((client) => proxy.#accept(client));
    await new Promise((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.url = `ws://127.0.0.1:${proxy.server.address().port}`;
    return proxy;
  }

  #accept(client) {
    this.accepted += 1;
    client.on('error', () => {});
    if (this.refuse) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.createConnection(this.targetPort, '127.0.0.1');
    upstream.on('error', () => {});
    const pair = { client, upstream, frozen: false };
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', drop);
    upstream.on('close', drop);
    client.on('data', (chunk) => pair.frozen || upstream.write(chunk));
    upstream.on('data', (chunk) => pair.frozen || client.write(chunk));
  }

  /** Drops every connection now: both sides see a reset, neither a close frame. */
  cut() {
    for (const pair of this.pairs) {
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Stops forwarding on the connections open now, and closes nothing. */
  freeze() {
    for (const pair of this.pairs) pair.frozen = true;
  }

  async stop() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Records a client's events in order: `events` [{event, value, at}]. */
export function record(client) {
  const events = [];
  for (const event of ['connected', 'disconnected', 'message', 'publication', 'lost']) {
    client.on(event, (value) => events.push({ event, value, at: Date.now() }));
  }
  return events;
}

export const of = (events, name) => events.filter((e) => e.event === name).map((e) => e.value);

/**
 * Publishes `total` publications (data "1", "2", …) into `channel` at 1,000 a
 * second through the control socket; after number `restartAt` the daemon is
 * restarted behind `proxy`: SIGTERM (its clients get 1001), `restart()` starts
 * the next one, the proxy turns to it. Returns every reply and the daemon
 * running at the end.
 */
export async function publishAcrossRestart({ daemon, proxy, channel, total, restartAt, restart }) {
  let control = await ControlClient.connect(daemon.control);
  const replies = [];
  let started = Date.now();
  for (let i = 1; i <= total; i++) {
    replies.push(control.request({ op: 'publish', channel, data: String(i) }));
    if (i === restartAt) {
      await Promise.all(replies); // the first daemon answered all of its own
      control.close();
      proxy.refuse = true;
      await daemon.stop();
      daemon = await restart();
      proxy.targetPort = daemon.port;
      proxy.refuse = false;
      control = await ControlClient.connect(daemon.control);
      started = Date.now() - i;
    }
    if (i % 10 === 0) await sleep(Math.max(0, started + i - Date.now()));
  }
  const answered = await Promise.all(replies);
  control.close();
  return { answered, daemon };
}
