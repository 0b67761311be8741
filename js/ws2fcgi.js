// ws2fcgi.js: the WebSocket client for ws2fcgi, for browsers and Node >= 20.
//
// One ES module, no dependencies. It speaks the `ws2fcgi.v1` subprotocol
// (docs/protocol.md, "The ws2fcgi.v1 subprotocol"): it tells publications
// from messages for this connection, keeps its position in every channel
// that has history, offers those positions when it reconnects so the daemon
// sends what it missed, watches the daemon's heartbeat to notice a dead
// connection, and reconnects with jittered exponential backoff until it is
// closed or told not to come back. See README.md beside this file.

/** The subprotocol this client speaks. */
export const PROTOCOL = 'ws2fcgi.v1';
/** Prefix of the subprotocol token that carries the positions on a reconnect. */
export const SINCE_PREFIX = 'ws2fcgi.since.';

/** How long a connection attempt may take until its `connected` frame arrives. */
const CONNECT_TIMEOUT_MS = 20_000;
/** Added to twice the heartbeat interval before a silent connection counts as dead. */
const HEARTBEAT_SLACK_MS = 1_000;
/**
 * Positions offered in one handshake at most: the daemon takes 256 channels,
 * and the header must fit nginx's default 8 KiB header line and leave room
 * for cookies in the daemon's handshake limit (16 KiB by default). Channels
 * past these are reported lost after the reconnect.
 */
const MAX_SINCE_CHANNELS = 256;
const MAX_SINCE_JSON_BYTES = 5632; // a token of at most 7.5 KB
/** A Retry-After longer than this (seconds) is taken as this. */
const MAX_RETRY_AFTER_S = 3_600;
/** Close code of a restart by handover: another process serves, come back now. */
const CLOSE_RESTART = 1012;
/** Close code of a daemon too busy to admit the connection ("Try Again Later"). */
const CLOSE_TRY_AGAIN = 1013;
/** How a 1013 close's reason carries the daemon's Retry-After, in seconds. */
const RETRY_AFTER_REASON = /retry after (\d+(?:\.\d+)?)/i;
/** The page must have been hidden this long for a return to check the connection at once. */
const LONG_SLEEP_MS = 10_000;

const EVENTS = ['connected', 'disconnected', 'message', 'publication', 'lost'];
const OPEN = 1;

/**
 * The subprotocol token for `positions` (channel -> {offset, epoch}):
 * `ws2fcgi.since.` and base64url without padding of the UTF-8 JSON
 * `{"<channel>":[<offset>,"<epoch>"],...}`; null when there is none.
 */
export function sinceToken(positions) {
  const object = {};
  let any = false;
  for (const [channel, { offset, epoch }] of positions) {
    object[channel] = [offset, epoch];
    any = true;
  }
  if (!any) return null;
  const bytes = new TextEncoder().encode(JSON.stringify(object));
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return SINCE_PREFIX + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * Splits one `ws2fcgi.v1` message (a string, or an ArrayBuffer or
 * Uint8Array for a binary one) into its header and its data: returns
 * `{ header, data }`, header an object (null for a message for this
 * connection only, whose header is empty) and data a string or a
 * Uint8Array (a copy); null when the message is not a valid frame (no
 * newline, or a header that is not a JSON object).
 */
export function parseFrame(message) {
  let head;
  let data;
  if (typeof message === 'string') {
    const newline = message.indexOf('\n');
    if (newline < 0) return null;
    head = message.slice(0, newline);
    data = message.slice(newline + 1);
  } else {
    const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
    const newline = bytes.indexOf(10);
    if (newline < 0) return null;
    head = new TextDecoder().decode(bytes.subarray(0, newline));
    data = bytes.slice(newline + 1);
  }
  if (head === '') return { header: null, data };
  let header;
  try {
    header = JSON.parse(head);
  } catch {
    return null;
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) return null;
  return { header, data };
}

/**
 * A connection to ws2fcgi that reconnects by itself and catches up on the
 * channels it was in. Connecting starts at once.
 */
export class Ws2fcgi {
  #url;
  #WebSocket;
  #minDelay;
  #maxDelay;
  #listeners = new Map(EVENTS.map((name) => [name, new Set()]));
  /** channel -> {offset, epoch}: how far this client got in each channel with history. */
  #positions = new Map();
  /** Channels with a position the last handshake had no room to offer. */
  #unoffered = new Set();
  #ws = null;
  /** True once close() was called or a final close came: nothing reconnects. */
  #stopped = false;
  /** True once the current socket's `connected` event was emitted. */
  #connected = false;
  #connectedAt = 0;
  #lastReceived = 0;
  #attempt = 0;
  #timer = null; // the reconnect delay
  #watchdog = null;
  #silenceLimit = CONNECT_TIMEOUT_MS;
  /** What the handshake's HTTP answer said, when the WebSocket implementation lets us see it. */
  #refused = null;
  #hiddenAt = 0;
  #onWake = () => this.#wake();
  #onVisibility = () => {
    const doc = globalThis.document;
    if (!doc) return;
    if (doc.visibilityState === 'hidden') {
      this.#hiddenAt = Date.now();
    } else if (this.#hiddenAt && Date.now() - this.#hiddenAt >= LONG_SLEEP_MS) {
      this.#hiddenAt = 0;
      this.#wake();
    }
  };

  /**
   * @param {string} url ws:// or wss:// URL of the daemon (or of the proxy in front of it).
   * @param {{WebSocket?: Function, minDelay?: number, maxDelay?: number}} [options]
   */
  constructor(url, options = {}) {
    const { WebSocket = globalThis.WebSocket, minDelay = 500, maxDelay = 10_000 } = options;
    if (typeof WebSocket !== 'function') {
      throw new TypeError('ws2fcgi: no WebSocket implementation; pass one as options.WebSocket (in Node: the ws package)');
    }
    if (!(minDelay > 0) || !(maxDelay >= minDelay)) {
      throw new RangeError('ws2fcgi: minDelay must be > 0 and maxDelay >= minDelay');
    }
    this.#url = String(url);
    this.#WebSocket = WebSocket;
    this.#minDelay = minDelay;
    this.#maxDelay = maxDelay;
    this.#open(true); // a bad URL throws here, from the constructor
    if (typeof globalThis.addEventListener === 'function') {
      globalThis.addEventListener('online', this.#onWake);
      globalThis.document?.addEventListener?.('visibilitychange', this.#onVisibility);
    }
  }

  /** Adds a listener for `event`; returns this. */
  on(event, fn) {
    this.#set(event).add(fn);
    return this;
  }

  /** Removes a listener added with on(); returns this. */
  off(event, fn) {
    this.#set(event).delete(fn);
    return this;
  }

  /**
   * Sends one message (a `message` event in PHP): a string as text, an
   * ArrayBuffer or Uint8Array as binary. Returns true when the message was
   * handed to an open connection, false when there is none (between
   * connections, or after close()): then nothing is sent and nothing is
   * kept for later.
   */
  send(data) {
    if (typeof data !== 'string' && !(data instanceof ArrayBuffer) && !(data instanceof Uint8Array)) {
      throw new TypeError('ws2fcgi: send() takes a string, an ArrayBuffer or a Uint8Array');
    }
    if (this.#stopped || !this.#ws || this.#ws.readyState !== OPEN) return false;
    this.#ws.send(data);
    return true;
  }

  /** Closes the connection (code 1000) and stops reconnecting, for good. */
  close() {
    if (this.#stopped) return;
    this.#stop();
    const ws = this.#detach();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this.#emit('disconnected', { code: 1000, reason: 'closed by the client', willReconnect: false });
  }

  #set(event) {
    const set = this.#listeners.get(event);
    if (!set) throw new TypeError(`ws2fcgi: unknown event ${JSON.stringify(event)} (one of ${EVENTS.join(', ')})`);
    return set;
  }

  #emit(event, value) {
    for (const fn of [...this.#listeners.get(event)]) {
      try {
        fn(value);
      } catch (error) {
        // A listener's error must not break the connection's state: report it as uncaught.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  #open(first = false) {
    this.#timer = null;
    this.#connected = false;
    this.#refused = null;
    const protocols = [PROTOCOL];
    const since = sinceToken(this.#offer());
    if (since) protocols.push(since);
    let ws;
    try {
      ws = new this.#WebSocket(this.#url, protocols);
    } catch (error) {
      if (first) throw error;
      this.#schedule(null);
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.#opened(ws);
    ws.onmessage = (event) => this.#received(ws, event.data);
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (event) => this.#closed(ws, event.code, event.reason);
    if (typeof ws.on === 'function') {
      // The ws package shows the HTTP answer of a refused handshake; browsers do not.
      ws.on('unexpected-response', (request, response) => {
        const retryAfter = Number.parseInt(response.headers?.['retry-after'] ?? '', 10);
        this.#refused = { status: response.statusCode, retryAfter: Number.isFinite(retryAfter) ? retryAfter : null };
        response.resume?.();
        ws.terminate();
      });
    }
    this.#silenceLimit = CONNECT_TIMEOUT_MS;
    this.#arm(ws);
  }

  /** The positions the next handshake offers: as many as fit; the others are remembered as unoffered. */
  #offer() {
    const offered = new Map();
    this.#unoffered.clear();
    const encoder = new TextEncoder();
    let bytes = 2;
    for (const [channel, position] of this.#positions) {
      bytes += encoder.encode(JSON.stringify(channel)).length + String(position.offset).length;
      bytes += encoder.encode(JSON.stringify(position.epoch)).length + 4;
      if (offered.size < MAX_SINCE_CHANNELS && bytes <= MAX_SINCE_JSON_BYTES) {
        offered.set(channel, position);
      } else {
        this.#unoffered.add(channel);
      }
    }
    return offered;
  }

  #opened(ws) {
    if (ws !== this.#ws) return;
    this.#lastReceived = Date.now();
    if (ws.protocol !== PROTOCOL) {
      // Raw frames (PHP chose another subprotocol): no positions, no heartbeat.
      this.#disarm();
      this.#up(null, false);
    }
  }

  #up(connectionId, recovered) {
    this.#connected = true;
    this.#connectedAt = Date.now();
    this.#emit('connected', { connectionId, recovered });
  }

  #received(ws, message) {
    if (ws !== this.#ws) return;
    this.#lastReceived = Date.now();
    if (ws.protocol !== PROTOCOL) {
      this.#emit('message', typeof message === 'string' ? message : new Uint8Array(message));
      return;
    }
    if (this.#connected) this.#arm(ws);
    const frame = parseFrame(message);
    if (!frame) return; // not a ws2fcgi.v1 frame: nothing an app could use
    const { header, data } = frame;
    if (header === null) {
      this.#emit('message', data);
      return;
    }
    if (typeof header.t === 'string') {
      this.#control(ws, header);
      return;
    }
    if (typeof header.c !== 'string') return;
    const channel = header.c;
    const offset = header.o;
    const epoch = header.e;
    if (Number.isSafeInteger(offset) && typeof epoch === 'string') {
      const known = this.#positions.get(channel);
      if (known && known.epoch === epoch && offset <= known.offset) return; // a duplicate
      this.#positions.set(channel, { offset, epoch });
      if (known && (known.epoch !== epoch || offset > known.offset + 1)) {
        // Never sent by a correct daemon; if it happens the app must not believe it saw everything.
        this.#emit('lost', { channel });
      }
      this.#emit('publication', { channel, data, offset, epoch });
    } else {
      this.#emit('publication', { channel, data, offset: undefined, epoch: undefined });
    }
  }

  #control(ws, header) {
    switch (header.t) {
      case 'connected': {
        const channels = header.channels && typeof header.channels === 'object' ? header.channels : {};
        const lost = new Set(Array.isArray(header.lost) ? header.lost.filter((c) => typeof c === 'string') : []);
        for (const channel of this.#unoffered) {
          if (Object.hasOwn(channels, channel)) lost.add(channel); // joined again, but nothing was asked for it
        }
        this.#unoffered.clear();
        this.#positions.clear();
        for (const [channel, at] of Object.entries(channels)) this.#remember(channel, at);
        const hb = Number(header.hb);
        this.#silenceLimit = hb > 0 ? hb * 2000 + HEARTBEAT_SLACK_MS : Infinity;
        this.#arm(ws);
        this.#up(typeof header.id === 'string' ? header.id : null, header.recovered === true && lost.size === 0);
        for (const channel of lost) this.#emit('lost', { channel });
        break;
      }
      case 'joined':
        if (typeof header.c === 'string') this.#remember(header.c, header);
        break;
      case 'left':
        if (typeof header.c === 'string') this.#positions.delete(header.c);
        break;
      case 'skip':
        // A publication this connection was left out of (`except`): only the position moves.
        if (typeof header.c === 'string' && this.#positions.has(header.c)) this.#remember(header.c, header);
        break;
      default:
        // 'hb', and kinds a later daemon may add: receiving it was the point.
        break;
    }
  }

  #remember(channel, at) {
    if (at && Number.isSafeInteger(at.o) && typeof at.e === 'string') {
      this.#positions.set(channel, { offset: at.o, epoch: at.e });
    } else {
      this.#positions.delete(channel);
    }
  }

  #closed(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#detach();
    const wasConnected = this.#connected;
    this.#connected = false;
    const refused = this.#refused;
    let final = code >= 4000 && code <= 4099;
    if (refused) {
      reason = `handshake refused: HTTP ${refused.status}`;
      const status = refused.status;
      final = status >= 400 && status < 500 && status !== 408 && status !== 429;
    }
    if (final) this.#stop();
    if (wasConnected || final) {
      this.#emit('disconnected', { code, reason, willReconnect: !this.#stopped });
    }
    if (this.#stopped) return;
    if (wasConnected && Date.now() - this.#connectedAt >= this.#maxDelay) this.#attempt = 0;
    if (!refused && code === CLOSE_RESTART) {
      // A new process serves already: now, spread over minDelay so that every client does not come in the same millisecond.
      this.#attempt = 0;
      this.#timer = setTimeout(() => this.#open(), Math.random() * this.#minDelay);
      return;
    }
    const told = !refused && code === CLOSE_TRY_AGAIN ? RETRY_AFTER_REASON.exec(reason ?? '') : null;
    if (told) {
      // The daemon's own estimate of when it has room: between it and twice it (full jitter over one more window).
      const wait = Math.min(Number(told[1]), MAX_RETRY_AFTER_S) * 1000;
      this.#attempt += 1;
      this.#timer = setTimeout(() => this.#open(), wait > 0 ? wait * (1 + Math.random()) : Math.random() * this.#minDelay);
      return;
    }
    const retryAfter = refused && (refused.status === 429 || refused.status === 503) ? refused.retryAfter : null;
    this.#schedule(retryAfter);
  }

  /** Waits before the next attempt: a Retry-After (seconds) when given, else the backoff. */
  #schedule(retryAfter) {
    let delay;
    if (retryAfter !== null && retryAfter >= 0) {
      const wait = Math.min(retryAfter, MAX_RETRY_AFTER_S) * 1000;
      delay = Math.max(wait, this.#minDelay) * (1 + Math.random() / 2);
    } else {
      const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** Math.min(this.#attempt + 1, 30));
      delay = this.#minDelay + Math.random() * (ceiling - this.#minDelay);
    }
    this.#attempt += 1;
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  /** Back online, or back from a long sleep: try now rather than when the timers say. */
  #wake() {
    if (this.#stopped) return;
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#attempt = 0;
      this.#open();
    } else if (this.#ws && this.#connected && Date.now() - this.#lastReceived > this.#silenceLimit) {
      this.#dead(this.#ws);
    }
  }

  /** (Re)starts the watchdog: nothing received for #silenceLimit ms -> the connection is dead. */
  #arm(ws) {
    this.#disarm();
    if (this.#silenceLimit === Infinity) return;
    this.#watchdog = setTimeout(() => this.#dead(ws), this.#silenceLimit);
  }

  #disarm() {
    if (this.#watchdog !== null) clearTimeout(this.#watchdog);
    this.#watchdog = null;
  }

  /** Gives up on a silent connection at once, without waiting for a close handshake it would never finish. */
  #dead(ws) {
    if (ws !== this.#ws) return;
    const reason = this.#connected ? 'heartbeat timeout' : 'connect timeout';
    this.#closed(ws, 1006, reason); // forgets ws and schedules the next attempt
    try {
      if (typeof ws.terminate === 'function') ws.terminate(); // ws: drops the socket
      else ws.close(4408, reason);
    } catch {
      // nothing left to close
    }
  }

  /** Forgets the current socket: none of its events reach the app after this. */
  #detach() {
    this.#disarm();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
    return ws;
  }

  #stop() {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (typeof globalThis.removeEventListener === 'function') {
      globalThis.removeEventListener('online', this.#onWake);
      globalThis.document?.removeEventListener?.('visibilitychange', this.#onVisibility);
    }
  }
}
