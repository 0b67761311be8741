// A restart nobody notices, with ws2fcgi.js in Node: clients of a channel
// with history (in memory) while a publisher keeps publishing through the
// control socket at 1,000 a second, and the daemon gets SIGUSR2 (a handover
// to a new process of the same binary, with an external php-fpm of the
// test's own). Every client is closed with 1012, reconnects to the new
// process by itself, and recovers through history: every publication once,
// in order, under one epoch.
//
// Run: cd tests/js && npm ci && node --test (see README.md).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { Ws2fcgi } from '../../js/ws2fcgi.js';
import { Daemon, Fpm, of, record, sleep, until } from './support.mjs';

const cleanups = [];
after(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/**
 * A control-socket publisher that never loses a request and never sends one
 * twice: when its connection closes, the requests without a reply did not
 * run (the old process relays to the new one and, when it exits, stops at a
 * request boundary and answers what it passed on: control/relay.rs), so they
 * are sent again, in order, on a new connection.
 */
class Publisher {
  constructor(socketPath) {
    this.path = socketPath;
    this.unanswered = []; // {line, resolve}, in the order sent
    this.reconnects = 0;
    this.stopped = false;
  }

  async connect() {
    this.socket = null; // requests wait in `unanswered` meanwhile
    for (;;) {
      try {
        this.socket = await new Promise((resolve, reject) => {
          const socket = net.createConnection(this.path);
          socket.once('error', reject);
          socket.once('connect', () => {
            socket.off('error', reject);
            resolve(socket);
          });
        });
        break;
      } catch {
        await sleep(10);
      }
    }
    // In the same turn as the socket is set: nothing written in between.
    for (const request of this.unanswered) this.socket.write(request.line);
    let buffer = '';
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk) => {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        this.unanswered.shift()?.resolve(JSON.parse(line));
      }
    });
    this.socket.on('error', () => {});
    this.socket.once('close', async () => {
      if (this.stopped) return;
      this.reconnects += 1;
      await this.connect();
    });
  }

  publish(object) {
    return new Promise((resolve) => {
      const line = `${JSON.stringify(object)}\n`;
      this.unanswered.push({ line, resolve });
      this.socket?.write(line);
    });
  }

  close() {
    this.stopped = true;
    this.socket?.end();
  }
}

/** The pid of the process the old one started (its log line). */
function successorPid(log) {
  const found = log.match(/handover: new process started pid=(\d+)/);
  return found ? Number(found[1]) : null;
}

/** Running (a zombie, its parent gone and not reaped yet, has ended). */
function alive(pid) {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

test('SIGUSR2 while publishing at 1,000/s: every client gets every publication once, in order', async () => {
  const fpm = await Fpm.start(4);
  cleanups.push(() => fpm.stop());
  const daemon = await Daemon.start({
    fpm: [`address = ${JSON.stringify(`unix:${fpm.socket}`)}`, 'pool_size = 4'],
  });
  let successor = null;
  cleanups.push(async () => {
    // The new process first: it serves from the old one's directory.
    successor ??= successorPid(daemon.log);
    if (successor && alive(successor)) {
      process.kill(successor, 'SIGTERM');
      try {
        await until('the new process to exit', () => !alive(successor));
      } catch {
        process.kill(successor, 'SIGKILL');
      }
    }
    await daemon.stop();
  });
  let failed = true;
  cleanups.push(() => failed && console.error(`--- ws2fcgi log (both processes)\n${daemon.log.split('\n').slice(-60).join('\n')}`));

  const channel = 'room:handover';
  const CLIENTS = 20;
  const clients = [];
  for (let n = 0; n < CLIENTS; n++) {
    const c = new Ws2fcgi(`${daemon.url}/?${new URLSearchParams({ join: channel })}`, { WebSocket, minDelay: 50, maxDelay: 200 });
    cleanups.push(() => c.close());
    clients.push(record(c));
  }
  await until('every client connected', () => clients.every((events) => of(events, 'connected').length === 1));

  const total = 3000;
  const signalAt = 1000;
  const publisher = new Publisher(daemon.control);
  await publisher.connect();
  cleanups.push(() => publisher.close());
  const replies = [];
  const started = Date.now();
  for (let i = 1; i <= total; i++) {
    replies.push(publisher.publish({ op: 'publish', channel, data: String(i) }));
    if (i === signalAt) daemon.child.kill('SIGUSR2');
    if (i % 10 === 0) await sleep(Math.max(0, started + i - Date.now()));
  }
  const answered = await Promise.all(replies);
  answered.forEach((reply, i) => {
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal(reply.offset, i + 1, 'offsets go on across the handover');
    assert.equal(reply.epoch, answered[0].epoch, 'one epoch: the history was handed over');
  });

  const expected = Array.from({ length: total }, (_, i) => String(i + 1));
  for (const [n, events] of clients.entries()) {
    await until(`client ${n}: publication ${total}`, () => of(events, 'publication').at(-1)?.data === String(total));
    const received = of(events, 'publication');
    assert.deepEqual(received.map((p) => p.data), expected, `client ${n}: every publication once, in order`);
    assert.ok(received.every((p) => p.epoch === answered[0].epoch), `client ${n}: one epoch`);
    const disconnected = of(events, 'disconnected');
    assert.deepEqual(disconnected, [{ code: 1012, reason: 'service restart', willReconnect: true }], `client ${n}`);
    const connected = of(events, 'connected');
    assert.equal(connected.length, 2, `client ${n}: reconnected once`);
    assert.equal(connected[1].recovered, true, `client ${n}: recovered through history`);
    assert.deepEqual(of(events, 'lost'), [], `client ${n}`);
  }

  // The old process handed over, sent its history, and exited 0.
  const { code } = await daemon.exited;
  assert.equal(code, 0, 'the old process exits 0');
  successor = successorPid(daemon.log);
  assert.ok(successor && alive(successor), 'the new process serves');
  assert.match(daemon.log, /handover: history sent; the new process serves.*channels=1/);
  assert.match(daemon.log, /handover: the old process's history is kept here channels=1/);
  assert.ok(publisher.reconnects >= 1, 'the publisher was moved to the new process when the old one exited');
  failed = false;
  console.log(
    `${CLIENTS} clients, ${total} publications in ${Date.now() - started} ms; ` +
      `the publisher reconnected ${publisher.reconnects} time(s)`,
  );
});
