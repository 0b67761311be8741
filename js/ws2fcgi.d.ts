// Type declarations of ws2fcgi.js (see README.md).

/** What a message or a publication carries: text as a string, binary as a Uint8Array (its own copy). */
export type Data = string | Uint8Array;

export interface Ws2fcgiOptions {
  /**
   * The WebSocket constructor. Default: `globalThis.WebSocket` (browsers, and
   * Node >= 22). In Node, pass the `ws` package's `WebSocket` to also get
   * the HTTP status of a refused handshake.
   */
  WebSocket?: new (url: string, protocols: string[]) => any;
  /** Shortest wait before a reconnect, in milliseconds. Default 500. */
  minDelay?: number;
  /** Longest wait before a reconnect, in milliseconds (a Retry-After may ask for more). Default 10000. */
  maxDelay?: number;
}

export interface ConnectedEvent {
  /** The connection's WS_CONNECTION_ID; null when PHP chose another subprotocol (raw frames). */
  connectionId: string | null;
  /** True when this client gave positions and every channel PHP joined was caught up. */
  recovered: boolean;
}

export interface DisconnectedEvent {
  /** The close code: the server's, 1006 when the connection dropped (or a handshake was refused). */
  code: number;
  /** The close reason; `heartbeat timeout` or `handshake refused: HTTP <status>` when the client decided. */
  reason: string;
  /** False after close(), a close code 4000-4099, or (Node, `ws`) a handshake refused with a final 4xx. */
  willReconnect: boolean;
}

export interface PublicationEvent {
  channel: string;
  data: Data;
  /** The publication's offset in its channel; undefined when the channel keeps no history. */
  offset: number | undefined;
  /** The channel's epoch; undefined when the channel keeps no history. */
  epoch: string | undefined;
}

export interface LostEvent {
  /** A channel whose missed publications could not be sent: reload its state. */
  channel: string;
}

export interface Ws2fcgiEvents {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  /** A message for this connection only (PHP's answer, a control `send`). */
  message: Data;
  publication: PublicationEvent;
  lost: LostEvent;
}

/** The subprotocol: `ws2fcgi.v1`. */
export const PROTOCOL: 'ws2fcgi.v1';
/** Prefix of the subprotocol token carrying the positions: `ws2fcgi.since.`. */
export const SINCE_PREFIX: 'ws2fcgi.since.';

/**
 * A connection to ws2fcgi that connects at once, reconnects by itself and
 * catches up on the channels it was in.
 */
export class Ws2fcgi {
  /** Throws TypeError without a WebSocket implementation, RangeError for bad delays, and what the WebSocket constructor throws for a bad URL. */
  constructor(url: string | URL, options?: Ws2fcgiOptions);
  on<E extends keyof Ws2fcgiEvents>(event: E, listener: (value: Ws2fcgiEvents[E]) => void): this;
  off<E extends keyof Ws2fcgiEvents>(event: E, listener: (value: Ws2fcgiEvents[E]) => void): this;
  /**
   * Sends one message (one `message` event in PHP): a string as text, an
   * ArrayBuffer or Uint8Array as binary. Returns true when it was handed to
   * an open connection (which may still drop before it is delivered), false
   * when there is none: between connections or after close(). Nothing is
   * queued for later. Throws TypeError for any other type.
   */
  send(data: string | ArrayBuffer | Uint8Array): boolean;
  /** Closes the connection (code 1000) and never reconnects. */
  close(): void;
}

/** The subprotocol token offering `positions` (channel -> position), or null when empty. */
export function sinceToken(positions: Iterable<[string, { offset: number; epoch: string }]>): string | null;

/** Splits one ws2fcgi.v1 message into its header (null when empty) and data; null when it is not a frame. */
export function parseFrame(message: string | ArrayBuffer | Uint8Array): { header: Record<string, unknown> | null; data: Data } | null;
