// Memory per idle connection over TLS, against the same over plain TCP.
//
//   node bench/idle-tls.mjs URL N DAEMON_PID
//
// Opens 200 connections and closes them (warm-up), reads the daemon's RSS,
// opens N idle connections (100 handshakes at a time), waits 3 s, reads the
// RSS again and prints one JSON line with the growth per connection. URL is
// ws://… for a plain listener or wss://… for a tls:// one (the certificate is
// not verified: this measures memory, not trust). It uses the `ws` package
// of tests/js (`cd tests/js && npm ci`), without permessage-deflate.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
const WebSocket = require('ws');
const [url, n, pid] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
if (!url || !n || !pid) throw new Error('usage: node bench/idle-tls.mjs URL N DAEMON_PID');
const rss = () => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function open(count) {
  const conns = [];
  for (let i = 0; i < count; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 100); j++) {
      batch.push(
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, { rejectUnauthorized: false, perMessageDeflate: false });
          ws.on('open', () => resolve(ws));
          ws.on('message', () => {});
          ws.on('error', reject);
        }),
      );
    }
    conns.push(...(await Promise.all(batch)));
  }
  return conns;
}

(await open(200)).forEach((ws) => ws.terminate());
await sleep(2000);
const before = rss();
const conns = await open(n);
await sleep(3000);
const after = rss();
console.log(JSON.stringify({ url, n, rss_before: before, rss_after: after, bytes_per_conn: Math.round((after - before) / n) }));
conns.forEach((ws) => ws.terminate());
process.exit(0);
