// The pure parts of ws2fcgi.js: the since token of a reconnect and the
// parsing of one ws2fcgi.v1 message, argument errors, the package metadata.
// No daemon needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { PROTOCOL, SINCE_PREFIX, Ws2fcgi, parseFrame, sinceToken } from '../../js/ws2fcgi.js';

function decodeToken(token) {
  assert.ok(token.startsWith(SINCE_PREFIX), token);
  const b64 = token.slice(SINCE_PREFIX.length);
  assert.match(b64, /^[A-Za-z0-9_-]+$/, 'base64url without padding');
  return JSON.parse(Buffer.from(b64, 'base64url').toString('utf8'));
}

test('the since token is base64url without padding of {"channel":[offset,"epoch"]}', () => {
  assert.equal(PROTOCOL, 'ws2fcgi.v1');
  // The example of docs/protocol.md.
  assert.equal(sinceToken(new Map([['room', { offset: 13, epoch: 'ab' }]])), 'ws2fcgi.since.eyJyb29tIjpbMTMsImFiIl19');
  const positions = new Map([
    ['room:1', { offset: 1, epoch: '9f2c01ab' }],
    ['café ☕', { offset: 123456789, epoch: 'e/+=' }], // multi-byte UTF-8, and bytes that base64 would write as + and /
    ['?>>', { offset: 7, epoch: '???' }],
  ]);
  assert.deepEqual(decodeToken(sinceToken(positions)), {
    'room:1': [1, '9f2c01ab'],
    'café ☕': [123456789, 'e/+='],
    '?>>': [7, '???'],
  });
  assert.equal(sinceToken(new Map()), null, 'no positions: no token');
});

test('a large set of positions encodes whole', () => {
  const positions = new Map();
  for (let i = 0; i < 2000; i++) positions.set(`channel-${i}`, { offset: i + 1, epoch: 'x'.repeat(16) });
  const decoded = decodeToken(sinceToken(positions));
  assert.equal(Object.keys(decoded).length, 2000);
  assert.deepEqual(decoded['channel-1999'], [2000, 'xxxxxxxxxxxxxxxx']);
});

test('a text frame: header line, newline, data', () => {
  assert.deepEqual(parseFrame('\nhello'), { header: null, data: 'hello' });
  assert.deepEqual(parseFrame('\n'), { header: null, data: '' });
  assert.deepEqual(parseFrame('\nline 1\nline 2'), { header: null, data: 'line 1\nline 2' }, 'only the first newline splits');
  assert.deepEqual(parseFrame('{"c":"room","o":13,"e":"9f"}\n{"x":1}'), {
    header: { c: 'room', o: 13, e: '9f' },
    data: '{"x":1}',
  });
  assert.deepEqual(parseFrame('{"t":"hb"}\n'), { header: { t: 'hb' }, data: '' });
});

test('a binary frame: UTF-8 header bytes, 0x0A, data as a Uint8Array of its own', () => {
  const header = new TextEncoder().encode('{"c":"é","o":2,"e":"x"}');
  const bytes = new Uint8Array([...header, 10, 0, 10, 255]);
  for (const message of [bytes.buffer, bytes]) {
    const frame = parseFrame(message);
    assert.deepEqual(frame.header, { c: 'é', o: 2, e: 'x' });
    assert.ok(frame.data instanceof Uint8Array);
    assert.deepEqual([...frame.data], [0, 10, 255]);
    assert.equal(frame.data.buffer.byteLength, 3, 'a copy, not a view of the whole message');
  }
  const empty = parseFrame(new Uint8Array([10, 1, 2]).buffer);
  assert.equal(empty.header, null);
  assert.deepEqual([...empty.data], [1, 2]);
});

test('what is not a frame is refused, not thrown', () => {
  for (const bad of ['no newline', '{"c":\n', 'null\nx', '[1]\nx', '"s"\nx', '5\nx', new Uint8Array([1, 2]).buffer]) {
    assert.equal(parseFrame(bad), null, String(bad));
  }
  // Unknown keys are kept for the caller, who ignores them.
  assert.deepEqual(parseFrame('{"c":"r","future":[1]}\nd').header, { c: 'r', future: [1] });
});

test('bad arguments get clear errors', () => {
  assert.throws(() => new Ws2fcgi('ws://127.0.0.1:1/', { WebSocket: null }), /no WebSocket implementation/);
  class Never {
    constructor() {
      throw new Error('not called');
    }
  }
  assert.throws(() => new Ws2fcgi('ws://x/', { WebSocket: Never, minDelay: 0 }), /minDelay/);
  assert.throws(() => new Ws2fcgi('ws://x/', { WebSocket: Never, minDelay: 500, maxDelay: 100 }), /maxDelay/);
  assert.throws(() => new Ws2fcgi('ws://x/', { WebSocket: Never }), /not called/, 'the first connect throws from the constructor');
});

test("the package's version is the daemon's, and its entry points exist", () => {
  const root = new URL('../../', import.meta.url);
  const cargo = readFileSync(new URL('Cargo.toml', root), 'utf8').match(/^version = "([^"]+)"/m)[1];
  const pkg = JSON.parse(readFileSync(new URL('js/package.json', root), 'utf8'));
  assert.equal(pkg.name, 'ws2fcgi');
  assert.equal(pkg.version, cargo, 'js/package.json follows Cargo.toml');
  for (const file of [pkg.exports['.'].default, pkg.exports['.'].types, ...pkg.files]) {
    assert.ok(existsSync(new URL(file, new URL('js/', root))), file);
  }
});
