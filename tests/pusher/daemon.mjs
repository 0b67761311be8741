// The real ws2fcgi daemon with Pusher apps, for the tests in this directory:
// started in a temporary directory on free ports (port 0, read back from its
// log), stopped (SIGTERM, then SIGKILL past the deadline) by each test file.
//
// The binary: $WS2FCGI_BIN when set; else `cargo build` (with --release when
// WS2FCGI_PROFILE=release) and target/<profile>/ws2fcgi, $CARGO_TARGET_DIR
// honoured.

import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');

/** Generous: the machine may be loaded. */
export const DEADLINE_MS = 20_000;

/** The apps every daemon here serves. */
export const APPS = [
  { id: '1001', key: 'app-key', secret: 'app-secret' },
  { id: '1002', key: 'other-key', secret: 'other-secret' },
];

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

/** A running daemon. `pusher` is TOML added to the [pusher] table. */
export class Daemon {
  static async start({ pusher = '' } = {}) {
    const daemon = new Daemon();
    daemon.dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-pusher-'));
    const config = path.join(daemon.dir, 'ws2fcgi.toml');
    writeFileSync(
      config,
      [
        'listen = ["127.0.0.1:0"]',
        '[fpm]',
        // No PHP is asked: Pusher connections and the HTTP API are handled in Rust.
        'address = "127.0.0.1:9"',
        '[pusher]',
        'api_listen = "127.0.0.1:0"',
        pusher,
        ...APPS.flatMap((a) => ['[[pusher.app]]', `id = "${a.id}"`, `key = "${a.key}"`, `secret = "${a.secret}"`]),
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
      const ports = await until('the daemon to listen', () => {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`ws2fcgi exited at start (${child.exitCode ?? child.signalCode}):\n${daemon.log}`);
        }
        const ws = daemon.log.match(/accepting WebSocket clients.*address=127\.0\.0\.1:(\d+)/)?.[1];
        const api = daemon.log.match(/serving the Pusher HTTP API.*address=127\.0\.0\.1:(\d+)/)?.[1];
        return ws && api && { ws: Number(ws), api: Number(api) };
      });
      daemon.port = ports.ws;
      daemon.apiPort = ports.api;
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

  /** SIGTERM, SIGKILL if it is not gone within the deadline; removes its directory. */
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
// A last resort when node exits before a test's after() ran.
process.once('exit', () => {
  for (const daemon of running) daemon.child.kill('SIGKILL');
});
