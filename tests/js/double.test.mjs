// ws2fcgi.js against a server double, for what the real daemon never sends:
// duplicates, gaps, an epoch changing mid-connection, malformed frames and
// kinds of frame a later daemon may add. (The daemon's own behaviour is in
// client.test.mjs.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';
import { Ws2fcgi } from '../../js/ws2fcgi.js';
import { of, record, until } from './support.mjs';

test('duplicates are dropped; gaps, epoch changes and bad frames never pass silently', async () => {
  const offers = [];
  const sockets = [];
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (offered) => (offered.has('ws2fcgi.v1') ? 'ws2fcgi.v1' : false) });
  server.on('connection', (socket, request) => {
    offers.push(request.headers['sec-websocket-protocol']);
    sockets.push(socket);
  });
  await new Promise((resolve) => server.once('listening', resolve));
  const client = new Ws2fcgi(`ws://127.0.0.1:${server.address().port}/`, { WebSocket, minDelay: 20, maxDelay: 50 });
  const events = record(client);
  try {
    await until('a connection', () => sockets.length === 1);
    const frames = [
      '{"t":"connected","id":"c1","hb":30,"recovered":false,"channels":{"room":{"o":1,"e":"E"},"plain":{}}}\n',
      '{"c":"room","o":2,"e":"E"}\ntwo',
      '{"c":"room","o":2,"e":"E"}\ntwo again', // a duplicate
      '{"c":"room","o":1,"e":"E"}\none again', // older still
      '{"t":"a-later-kind","x":1}\n', // ignored
      '{"c":"room","o":3,"e":"E","later":"key"}\nthree', // unknown key ignored
      'no newline at all', // not a frame: dropped
      '[1]\nnot an object',
      '{"c":5}\nnot a channel',
      '{"c":"room","o":5,"e":"E"}\nfive', // 4 is missing: lost, then delivered
      '{"c":"room","o":1,"e":"F"}\nnew epoch', // the epoch changed: lost, then delivered
      '{"c":"plain"}\nno history',
      '{"t":"left","c":"room"}\n',
      '{"c":"room","o":7,"e":"F"}\nafter leaving', // no position any more: nothing to compare
      '{"t":"joined","c":"room","o":10,"e":"F"}\n',
      '{"c":"room","o":10,"e":"F"}\nten again', // at the joined position: a duplicate
      '{"c":"room","o":11,"e":"F"}\neleven',
      '\nfor you',
    ];
    for (const frame of frames) sockets[0].send(frame);
    sockets[0].send(Buffer.from([10, 0, 255])); // binary, empty header
    await until('the last message', () => of(events, 'message').length === 2);
    assert.deepEqual(
      events.filter((e) => e.event !== 'connected').map((e) => [e.event, e.value.data ?? e.value.channel ?? e.value]),
      [
        ['publication', 'two'],
        ['publication', 'three'],
        ['lost', 'room'],
        ['publication', 'five'],
        ['lost', 'room'],
        ['publication', 'new epoch'],
        ['publication', 'no history'],
        ['publication', 'after leaving'],
        ['publication', 'eleven'],
        ['message', 'for you'],
        ['message', new Uint8Array([0, 255])],
      ],
    );

    sockets[0].terminate(); // dropped: the client comes back and offers where it got to
    await until('a second connection', () => sockets.length === 2);
    const [protocol, since] = offers[1].split(/,\s*/);
    assert.equal(protocol, 'ws2fcgi.v1');
    assert.deepEqual(JSON.parse(Buffer.from(since.slice('ws2fcgi.since.'.length), 'base64url')), { room: [11, 'F'] });
    assert.equal(offers[0], 'ws2fcgi.v1', 'nothing to offer the first time');
  } finally {
    client.close();
    for (const socket of sockets) socket.terminate();
    await new Promise((resolve) => server.close(resolve));
  }
});

/**
 * A server double that closes every connection at once with `code` and
 * `reason`, as the daemon turns a handshake away; records when each came.
 */
async function closingServer(code, reason) {
  const times = [];
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: () => 'ws2fcgi.v1' });
  server.on('connection', (socket) => {
    times.push(Date.now());
    socket.close(code, reason);
  });
  await new Promise((resolve) => server.once('listening', resolve));
  return { times, url: `ws://127.0.0.1:${server.address().port}/`, close: () => new Promise((resolve) => server.close(resolve)) };
}

/** Runs `fn` with Math.random returning `value`. */
async function withRandom(value, fn) {
  const random = Math.random;
  Math.random = () => value;
  try {
    return await fn();
  } finally {
    Math.random = random;
  }
}

test('1012 (a restart by handover) reconnects now, not after the backoff', async () => {
  const server = await closingServer(1012, 'service restart');
  // minDelay past until()'s deadline: only the 1012 path can come back in time.
  const client = new Ws2fcgi(server.url, { WebSocket, minDelay: 60_000, maxDelay: 120_000 });
  try {
    await withRandom(0, () => until('three attempts', () => server.times.length >= 3));
  } finally {
    client.close();
    await server.close();
  }
});

test('1013 with "retry after N" waits between N and 2N seconds, whatever the backoff says', async () => {
  for (const [random, least] of [
    [0, 1000],
    [0.9, 1900],
  ]) {
    const server = await closingServer(1013, 'busy; retry after 1');
    const client = new Ws2fcgi(server.url, { WebSocket, minDelay: 60_000, maxDelay: 120_000 });
    try {
      await withRandom(random, () => until('a second attempt', () => server.times.length >= 2));
      const waited = server.times[1] - server.times[0];
      // Coming back within until()'s deadline at all shows minDelay (60 s) was not used.
      assert.ok(waited >= least, `random ${random}: waited ${waited} ms, at least ${least}`);
    } finally {
      client.close();
      await server.close();
    }
  }
});

test('1013 without a delay in its reason falls back to the backoff', async () => {
  const server = await closingServer(1013, 'try again later');
  const client = new Ws2fcgi(server.url, { WebSocket, minDelay: 50, maxDelay: 100 });
  try {
    await withRandom(0, () => until('a second attempt', () => server.times.length >= 2));
    assert.ok(server.times[1] - server.times[0] >= 50, 'at least minDelay');
  } finally {
    client.close();
    await server.close();
  }
});
