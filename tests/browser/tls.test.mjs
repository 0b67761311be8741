// Chromium over wss:// to a tls:// listener of the real daemon, with a
// certificate this test makes (openssl) and no nginx in front.
//
// Chromium trusts exactly that certificate through
// --ignore-certificate-errors-spki-list (the base64 SHA-256 of its public
// key): every other certificate error still fails, so the test first shows
// that without the flag the same connection is refused.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { launchChromium } from './launch.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const DEADLINE_MS = 20_000;

let dir;
let daemon; // { child, exited }
let port;
let spki;
const browsers = [];

/** $WS2FCGI_BIN, else `cargo build` of the profile scripts/test names (debug by default). */
function ws2fcgiBinary() {
  if (process.env.WS2FCGI_BIN) return process.env.WS2FCGI_BIN;
  const profile = process.env.WS2FCGI_PROFILE ?? 'debug';
  const args = ['build', '--quiet', '--bin', 'ws2fcgi', ...(profile === 'release' ? ['--release'] : [])];
  const built = spawnSync('cargo', args, { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
  if (built.status !== 0) throw new Error(`cargo ${args.join(' ')} failed`);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, 'target');
  return path.join(target, profile, 'ws2fcgi');
}

const log = () => {
  try {
    return readFileSync(path.join(dir, 'ws2fcgi.log'), 'utf8');
  } catch {
    return '';
  }
};

async function until(what, check) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ws2fcgi-tls-browser-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  // The SPKI pin: SHA-256 of the DER public key, base64.
  const publicKey = execFileSync('openssl', ['x509', '-in', cert, '-pubkey', '-noout']);
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: publicKey });
  spki = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64');

  const config = path.join(dir, 'ws2fcgi.toml');
  writeFileSync(config, [
    'listen = ["tls://127.0.0.1:0"]',
    `script = ${JSON.stringify(path.join(here, 'tls-echo.php'))}`,
    '[tls]',
    `cert = ${JSON.stringify(cert)}`,
    `key = ${JSON.stringify(key)}`,
    '[fpm]',
    'address = "managed"',
    'pool_size = 2',
    '[fpm.managed]',
    `run_dir = ${JSON.stringify(path.join(dir, 'fpm'))}`,
    '[shutdown]',
    'drain_timeout = "5s"',
    '',
  ].join('\n'));
  // stderr to a file: the managed php-fpm cannot open a pipe as /proc/self/fd/2.
  const logFd = openSync(path.join(dir, 'ws2fcgi.log'), 'a');
  const child = spawn(ws2fcgiBinary(), ['--config', config], {
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'ignore', logFd],
  });
  closeSync(logFd);
  daemon = { child, exited: new Promise((resolve) => child.once('exit', resolve)) };
  port = Number(await until('the daemon to listen', () => {
    if (child.exitCode !== null) throw new Error(`ws2fcgi exited at start:\n${log()}`);
    return log().match(/accepting WebSocket clients.*address=tls:\/\/127\.0\.0\.1:(\d+)/)?.[1];
  }));
});

after(async () => {
  for (const browser of browsers) await browser.close().catch(() => {});
  if (daemon && daemon.child.exitCode === null) {
    daemon.child.kill('SIGTERM');
    const stopped = await Promise.race([daemon.exited.then(() => true), new Promise((r) => setTimeout(r, 15_000, false).unref())]);
    if (!stopped) daemon.child.kill('SIGKILL');
  }
  if (process.exitCode || process.env.TLS_TEST_LOG) console.error(log());
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** In a page of `browser`: opens wss://, sends `text`, resolves with what came back (or the failure). */
async function exchange(browser, text) {
  const page = await browser.newPage();
  try {
    return await page.evaluate(
      ({ url, text }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url);
          const got = [];
          const timer = setTimeout(() => resolve({ error: 'no answer in time', got }), 15_000);
          ws.onmessage = (event) => {
            got.push(event.data);
            if (got.length === 1) ws.send(text);
            else {
              clearTimeout(timer);
              ws.close();
              resolve({ got });
            }
          };
          ws.onerror = () => {
            clearTimeout(timer);
            resolve({ error: 'connection failed', got });
          };
        }),
      { url: `wss://localhost:${port}/tls`, text },
    );
  } finally {
    await page.close();
  }
}

test('without the pin, Chromium refuses the test certificate', async () => {
  const browser = await launchChromium(chromium);
  browsers.push(browser);
  const result = await exchange(browser, 'hello');
  assert.equal(result.error, 'connection failed', JSON.stringify(result));
});

test('with the pin, Chromium speaks wss:// and PHP sees HTTPS', async () => {
  const browser = await launchChromium(chromium, [`--ignore-certificate-errors-spki-list=${spki}`]);
  browsers.push(browser);
  const result = await exchange(browser, 'héllo über TLS');
  assert.equal(result.error, undefined, JSON.stringify(result));
  const [open, echo] = result.got;
  assert.deepEqual(JSON.parse(open), { https: 'on', scheme: 'https', protocol: 'TLSv1.3', verify: 'NONE' });
  assert.equal(echo, 'héllo über TLS');
});
