// Types of the Sluice client (index.js).

/** The subprotocol that opens a multiplexed connection: `sluice.v1`. */
export declare const PROTOCOL: 'sluice.v1';

/** What a subscription selects, and where it starts. Every field is optional. */
export interface Selector {
  /** A configured topic (default: the gateway's default topic). */
  topic?: string;
  /** Exact message keys. */
  keys?: string[];
  /** A glob on the key: `*` any run, `?` one character (`sensor-*`). */
  pattern?: string;
  /** Headers the record must carry with these values. */
  headers?: Record<string, string>;
  /** RFC 6901 pointers into the JSON value, each equal to its value (`{"/temp": 20}`). */
  where?: Record<string, unknown>;
  /** Resume after this cursor (a record's `cursor`, kept from an earlier run). */
  cursor?: string;
  /** Start with the last N matching records. */
  last?: number;
  /** Start at the first record at or after this time: RFC 3339, or a duration such as `15m`. */
  since?: string;
}

/** One record, as a subscription delivers it. */
export interface SluiceRecord<V = unknown> {
  key: string | null;
  topic: string;
  partition: number;
  offset: number;
  /** Milliseconds since the epoch, when the record has a time. */
  timestamp: number | null;
  headers: Record<string, string | null>;
  /** The JSON value when the payload is JSON, a string for other text, bytes for binary. */
  value: V;
  /** The position just after this record: give it back as `Selector.cursor` to resume. */
  cursor: string;
}

/** The gateway's answer to a subscribe, at first and after each resume. */
export interface Subscribed {
  id: string;
  cursor: string;
  /** Present when a cursor was given: false when records after it were no longer available. */
  resumed?: boolean;
  /** Present when `last` was given: how many records it replayed. */
  last?: number;
}

export interface BackoffOptions {
  /** Milliseconds before the first reconnect attempt (before jitter). Default 500. */
  initialDelay?: number;
  /** Longest wait between attempts. Default 30000. */
  maxDelay?: number;
  /** How much each failed attempt multiplies the wait. Default 2. */
  factor?: number;
  /** Fraction of the wait taken off at random, 0 to 1. Default 0.5. */
  jitter?: number;
}

/** The constructor of a WebSocket: the browser's, or `ws`'s in Node.js. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => any;

export interface SluiceOptions {
  /**
   * A client token (sent as `?token=`), or a function giving one, called on every connect
   * and reconnect so that an expired token is replaced.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * With a token function: ask it for a new token shortly before the current one's `exp`
   * and present it on the open connection (`refresh`), so the gateway does not close it at
   * the expiry. Default true.
   */
  renew?: boolean;
  /** Where there is no global WebSocket (Node.js 20): `import WebSocket from 'ws'`. */
  WebSocket?: WebSocketConstructor;
  /** Request headers, such as Basic credentials: Node.js with `ws` only (browsers cannot). */
  headers?: Record<string, string>;
  /** Back-off between reconnect attempts, or false to never reconnect. */
  reconnect?: BackoffOptions | false;
}

export interface SluiceEvents {
  connected: { replyId: string };
  disconnected: { code: number; reason: string };
  reconnecting: { attempt: number; delay: number };
  subscribed: Subscribed;
  /** The gateway took a renewed token: it now closes the connection at this time. */
  refreshed: { expiresAt: string };
  /** A message the admin API (or `replies`) sent to this client: text, or bytes. */
  message: string | Uint8Array;
  error: SluiceError;
}

/** An error from the gateway, or from the connection. */
export declare class SluiceError extends Error {
  constructor(message: string, details?: { status?: number; id?: string });
  /** The status of the gateway's `error` frame (400, 403, 404, 429), when it sent one. */
  readonly status?: number;
  /** The subscription it is about, when it is about one. */
  readonly id?: string;
}

/** One subscription: records go to its callback, or to `for await`. */
export declare class Subscription<V = unknown> implements AsyncIterable<SluiceRecord<V>> {
  /** Made by `Sluice.subscribe` only. */
  private constructor();
  readonly id: string;
  readonly selector: Selector;
  /** The cursor of the last record received (or of the gateway's answer before any). */
  readonly cursor: string | undefined;
  /** Whether the gateway has accepted it at least once. */
  readonly confirmed: boolean;
  /** Resolves once the gateway accepted it. */
  readonly ready: Promise<Subscription<V>>;
  /** No record is delivered after this call; resolves once the gateway confirmed. */
  unsubscribe(): Promise<void>;
  /** Leaving the loop unsubscribes. */
  [Symbol.asyncIterator](): AsyncIterator<SluiceRecord<V>>;
}

export declare class Sluice {
  constructor(url: string | URL, options?: SluiceOptions);
  /** The id the gateway gave the current connection; null while disconnected. */
  readonly replyId: string | null;
  /** Whether a connection is open now. */
  readonly connected: boolean;
  /** Resolves once the gateway accepted the subscription; rejects with a SluiceError if refused. */
  subscribe<V = unknown>(selector?: Selector, onRecord?: (record: SluiceRecord<V>) => void): Promise<Subscription<V>>;
  subscribe<V = unknown>(onRecord: (record: SluiceRecord<V>) => void): Promise<Subscription<V>>;
  /** Sends a client message; false (nothing sent) while disconnected. */
  send(data: unknown): boolean;
  /** Sends a fresh token on the open connection: the gateway then closes it at that token's expiry. */
  refresh(): Promise<boolean>;
  /** Closes for good: no reconnect, every subscription ends. */
  close(): Promise<void>;
  on<E extends keyof SluiceEvents>(name: E, listener: (event: SluiceEvents[E]) => void): () => void;
  off<E extends keyof SluiceEvents>(name: E, listener: (event: SluiceEvents[E]) => void): void;
}

/** A JWT's `exp` (seconds since the epoch), read without verifying; null when it has none. */
export declare function tokenExpiry(token: string): number | null;

/** Milliseconds before a token's expiry to renew it, given the milliseconds it has left. */
export declare function renewalLead(left: number): number;

/** The wait before reconnect attempt `attempt` (0-based), in milliseconds. */
export declare function backoff(attempt: number, options?: BackoffOptions, random?: () => number): number;
