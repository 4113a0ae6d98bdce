// The Sluice client: many subscriptions over one WebSocket (the `sluice.v1` protocol), each
// resumed from its last cursor after a reconnect, so that a dashboard misses nothing when
// the network or the gateway goes away for a while.
//
// No dependency: browsers have a global WebSocket; Node.js 20 does not, so Node users pass
// one (the `ws` package) as `options.WebSocket`.

/** The subprotocol that opens a multiplexed connection on the gateway's `/`. */
export const PROTOCOL = 'sluice.v1';

// WebSocket.OPEN: the numeric value, because not every implementation puts the constant on
// the constructor it hands out.
const OPEN = 1;

const DEFAULT_BACKOFF = { initialDelay: 500, maxDelay: 30_000, factor: 2, jitter: 0.5 };

/**
 * Milliseconds to wait before reconnect attempt `attempt` (0 for the first one after a
 * drop): `initialDelay · factor^attempt`, capped at `maxDelay`, then reduced by up to
 * `jitter` (a fraction) at random, so that the thousands of clients a gateway restart drops
 * together do not all come back in the same instant.
 */
export function backoff(attempt, options = {}, random = Math.random) {
  const { initialDelay, maxDelay, factor, jitter } = { ...DEFAULT_BACKOFF, ...options };
  // The exponent is bounded so that a long outage cannot turn the ceiling into Infinity
  // (and 0 × Infinity into NaN).
  const ceiling = Math.min(maxDelay, initialDelay * factor ** Math.min(attempt, 64));
  return Math.round(ceiling * (1 - jitter * random()));
}

/** An error from the gateway (`status` is its HTTP-like status) or from the connection. */
export class SluiceError extends Error {
  constructor(message, { status, id } = {}) {
    super(message);
    this.name = 'SluiceError';
    // The status of the gateway's `error` frame (400, 403, 404, 429), when it sent one.
    this.status = status;
    // The subscription the error is about, when it is about one.
    this.id = id;
  }
}

// Binary record values and messages come base64-encoded inside the JSON frames; callers get
// the bytes back. `atob` exists in browsers and in Node.js 16 and later.
/**
 * The `exp` of a JWT (seconds since the epoch), or null when `token` is not one that says.
 * Read without verifying: it only decides when to ask for the next token.
 */
export function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const { exp } = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
    return Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds before a token's expiry to renew it: a tenth of what it has left, at least
 * 1 s and at most 60 s, so a short token is renewed with time to spare and a long one late.
 */
export function renewalLead(left) {
  return Math.min(60_000, Math.max(1_000, left / 10));
}

function decodeBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// A listener that throws must not break the client's handling of the frame that called it
// (the cursor bookkeeping would be skipped): its error is rethrown on its own, where the
// runtime reports uncaught errors.
function call(listener, value) {
  try {
    listener(value);
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

// What the client calls on a subscription; symbols keep these out of its public surface.
const DELIVER = Symbol('deliver');
const ANSWERED = Symbol('answered');
const END = Symbol('end');

/**
 * One subscription: its records go to the callback given to `subscribe`, or, without one,
 * are queued for `for await (const record of subscription)`.
 */
export class Subscription {
  #onRecord;
  #unsubscribe;
  #queue = [];
  #waiting = null; // the pending next() of an iteration, when the queue is empty
  #ended = false;
  #error = null;
  #ready;

  constructor(id, selector, onRecord, unsubscribe) {
    /** The id the gateway knows it by on this client's connections (`s1`, `s2`, …). */
    this.id = id;
    /** The selector it was opened with. */
    this.selector = selector;
    /**
     * Where it is in the stream: the cursor of the last record received, or of the
     * gateway's `subscribed` answer before any record. A reconnect resumes from it; store it
     * to resume after a page reload with `subscribe({ ...selector, cursor })`.
     */
    this.cursor = selector.cursor;
    /** Whether the gateway has accepted it at least once: its `last`/`since` then applied. */
    this.confirmed = false;
    this.#onRecord = onRecord;
    this.#unsubscribe = unsubscribe;
    this.#ready = withResolvers();
  }

  /** Resolves with this subscription once the gateway accepted it; rejects if it refused. */
  get ready() {
    return this.#ready.promise;
  }

  /** Stops its records (none is delivered after this call) and tells the gateway. */
  unsubscribe() {
    this[END]();
    return this.#unsubscribe();
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => this.#next(),
      // Leaving a `for await` loop (break, return, throw) ends the subscription: nobody
      // would read what the gateway kept sending.
      return: async () => {
        await this.unsubscribe();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  #next() {
    if (this.#queue.length > 0) return Promise.resolve({ value: this.#queue.shift(), done: false });
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  [ANSWERED](frame) {
    this.cursor = frame.cursor;
    this.confirmed = true;
    this.#ready.resolve(this);
  }

  [DELIVER](record) {
    if (this.#ended) return;
    this.cursor = record.cursor;
    if (this.#onRecord) return call(this.#onRecord, record);
    if (this.#waiting) {
      this.#waiting.resolve({ value: record, done: false });
      this.#waiting = null;
    } else {
      this.#queue.push(record);
    }
  }

  // Ends it: with the gateway's error when it refused it, else because it was unsubscribed
  // or the client closed. Records already queued are still read before the end.
  [END](error = null) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (error) {
      this.#ready.reject(error);
    } else {
      // Unsubscribed or closed, maybe before the gateway answered (else this changes
      // nothing): the caller asked for that end, so a subscribe promise it did not keep
      // must not turn into an unhandled rejection.
      this.#ready.promise.catch(() => {});
      this.#ready.reject(new SluiceError('closed before the gateway accepted the subscription'));
    }
    if (this.#waiting) {
      const { resolve, reject } = this.#waiting;
      this.#waiting = null;
      if (error) reject(error);
      else resolve({ value: undefined, done: true });
    }
  }
}

// Promise.withResolvers, which Node.js has only from version 22.
function withResolvers() {
  let resolve;
  let reject;
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  return { promise, resolve, reject };
}

/**
 * A connection to a Sluice gateway that carries any number of subscriptions, reconnects by
 * itself and resumes every subscription where it stopped.
 *
 * Events (`on(name, listener)`): `connected` ({ replyId }), `disconnected` ({ code,
 * reason }), `reconnecting` ({ attempt, delay }), `subscribed` (the gateway's answer, also
 * after each resume: `resumed: false` says records were lost), `message` (data the admin API
 * sent to this client) and `error` (a SluiceError).
 */
export class Sluice {
  #url;
  #options;
  #WebSocket;
  #socket = null;
  #subscriptions = new Map(); // id → Subscription, in the order they were opened
  #unsubscribing = new Map(); // id → resolve of an unsubscribe awaiting its answer
  #listeners = new Map();
  #nextId = 1;
  #attempt = 0; // failed attempts since the last connection that opened
  #timer = null;
  #renewal = null; // the timer that renews the token before it expires
  #closed = false;

  constructor(url, options = {}) {
    // Checked here, so that a wrong address fails at once rather than on every attempt.
    this.#url = new URL(url).href;
    this.#options = options;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('no WebSocket here: pass one as options.WebSocket (in Node.js, the ws package)');
    }
    /** The id the gateway gave the current connection (admin API, console); null when down. */
    this.replyId = null;
    this.#connect();
  }

  /** Whether a connection is open now. */
  get connected() {
    return this.#socket?.readyState === OPEN;
  }

  /** Calls `listener` on each event `name`; returns a function that removes it. */
  on(name, listener) {
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(listener);
    return () => this.off(name, listener);
  }

  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  #emit(name, value) {
    for (const listener of [...(this.#listeners.get(name) ?? [])]) call(listener, value);
  }

  /**
   * Opens a subscription. `selector` holds any of topic, keys, pattern, headers, where,
   * cursor, last and since (none: every key of the default topic). Records go to
   * `onRecord`, or without it to `for await` on the subscription. Resolves once the gateway
   * accepted it; rejects with a SluiceError (its `status` 400, 403, 404 or 429) if it refused.
   */
  subscribe(selector = {}, onRecord = undefined) {
    if (typeof selector === 'function') return this.subscribe({}, selector);
    if (this.#closed) return Promise.reject(new SluiceError('the client is closed'));
    const id = `s${this.#nextId++}`;
    const subscription = new Subscription(id, { ...selector }, onRecord, () => this.#unsubscribe(id));
    this.#subscriptions.set(id, subscription);
    // Not open yet: the connection sends every subscription as it opens.
    if (this.connected) this.#sendSubscribe(subscription);
    return subscription.ready;
  }

  /** Sends a client message (it reaches the gateway's `output` topic and event feed). */
  send(data) {
    // Not queued while disconnected: a message from minutes ago may no longer be meant.
    if (!this.connected) return false;
    this.#socket.send(JSON.stringify({ type: 'message', data }));
    return true;
  }

  /**
   * Sends a fresh token (from `options.token`) on the open connection, for gateways that
   * accept `{"type":"refresh"}`; others answer with an `error` event. Every reconnect asks
   * for a fresh token anyway.
   */
  async refresh() {
    let token;
    try {
      token = await this.#token();
    } catch (error) {
      this.#emit('error', new SluiceError(`the token callback failed: ${error?.message ?? error}`));
      return false;
    }
    if (!this.connected || !token) return false;
    this.#socket.send(JSON.stringify({ type: 'refresh', token }));
    this.#renewBefore(token);
    return true;
  }

  // With a token callback, asks it for a new token before `token` expires and presents it
  // on the open connection (`refresh`), so the gateway does not close it with 4001. Unless
  // `renew: false`; a token given as a string cannot be renewed.
  #renewBefore(token) {
    clearTimeout(this.#renewal);
    this.#renewal = null;
    if (typeof this.#options.token !== 'function' || this.#options.renew === false) return;
    const exp = tokenExpiry(token);
    if (exp === null) return;
    const left = exp * 1000 - Date.now();
    this.#renewal = setTimeout(() => this.refresh(), Math.max(0, left - renewalLead(left)));
  }

  /** Closes the connection for good: no reconnect; subscriptions end. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#renewal);
    for (const subscription of this.#subscriptions.values()) subscription[END]();
    this.#subscriptions.clear();
    const socket = this.#socket;
    if (!socket) return Promise.resolve();
    return new Promise((resolve) => {
      socket.addEventListener('close', () => resolve());
      socket.close(1000, 'client closed');
    });
  }

  async #token() {
    const { token } = this.#options;
    return typeof token === 'function' ? token() : token;
  }

  async #connect() {
    this.#timer = null;
    let token;
    try {
      // Asked on every (re)connect: an expired token is replaced by a fresh one.
      token = await this.#token();
    } catch (error) {
      this.#emit('error', new SluiceError(`the token callback failed: ${error?.message ?? error}`));
      return this.#retry();
    }
    if (this.#closed) return;
    const url = new URL(this.#url);
    // Browsers cannot set headers on a WebSocket: the token goes in the query string.
    if (token) url.searchParams.set('token', token);
    // Headers (Basic credentials) only where the implementation takes them: `ws` does.
    const { headers } = this.#options;
    let socket;
    try {
      socket = headers
        ? new this.#WebSocket(url.href, PROTOCOL, { headers })
        : new this.#WebSocket(url.href, PROTOCOL);
    } catch (error) {
      this.#emit('error', new SluiceError(`cannot connect: ${error?.message ?? error}`));
      return this.#retry();
    }
    this.#socket = socket;
    let opened = false;
    let failure = null;

    socket.addEventListener('open', () => {
      if (socket !== this.#socket) return;
      opened = true;
      this.#attempt = 0;
      this.#renewBefore(token);
      for (const subscription of this.#subscriptions.values()) this.#sendSubscribe(subscription);
    });
    socket.addEventListener('message', (event) => {
      if (socket === this.#socket) this.#receive(event.data);
    });
    // Browsers say nothing in an error event; `ws` says why (e.g. "Unexpected server
    // response: 401"). Either way a close follows, which reports it.
    socket.addEventListener('error', (event) => {
      failure = event?.message ?? event?.error?.message ?? null;
    });
    socket.addEventListener('close', (event) => {
      if (socket !== this.#socket) return;
      this.#socket = null;
      this.replyId = null;
      clearTimeout(this.#renewal);
      // The answers still awaited will not come: those subscriptions are gone anyway.
      for (const resolve of this.#unsubscribing.values()) resolve();
      this.#unsubscribing.clear();
      if (opened) {
        this.#emit('disconnected', { code: event.code, reason: event.reason });
      } else if (!this.#closed) {
        this.#emit('error', new SluiceError(`cannot connect: ${failure ?? `closed with code ${event.code}`}`));
      }
      if (!this.#closed) this.#retry();
    });
  }

  #retry() {
    if (this.#closed || this.#options.reconnect === false) return;
    const attempt = this.#attempt++;
    const delay = backoff(attempt, this.#options.reconnect);
    this.#emit('reconnecting', { attempt, delay });
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #sendSubscribe(subscription) {
    const frame = { ...subscription.selector, type: 'subscribe', id: subscription.id };
    // Once accepted, it resumes from where it is; `last` and `since` were for the first
    // opening and would replay records already delivered.
    if (subscription.confirmed) {
      frame.cursor = subscription.cursor;
      delete frame.last;
      delete frame.since;
    }
    this.#socket.send(JSON.stringify(frame));
  }

  #unsubscribe(id) {
    if (!this.#subscriptions.delete(id)) return Promise.resolve();
    // Closed meanwhile: the next connection will simply not subscribe it again.
    if (!this.connected) return Promise.resolve();
    this.#socket.send(JSON.stringify({ type: 'unsubscribe', id }));
    return new Promise((resolve) => this.#unsubscribing.set(id, resolve));
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return this.#emit('error', new SluiceError('the gateway sent a frame that is not JSON'));
    }
    switch (frame.type) {
      case 'connected':
        this.replyId = frame.replyId;
        return this.#emit('connected', { replyId: frame.replyId });
      case 'record': {
        const { type, sub, valueEncoding, ...record } = frame;
        if (valueEncoding === 'base64') record.value = decodeBase64(record.value);
        // A record of a subscription ended here is dropped: the gateway may have sent it
        // before it read the unsubscribe.
        return this.#subscriptions.get(sub)?.[DELIVER](record);
      }
      case 'subscribed': {
        const { type, ...answer } = frame;
        this.#subscriptions.get(frame.id)?.[ANSWERED](frame);
        return this.#emit('subscribed', answer);
      }
      case 'unsubscribed':
        this.#unsubscribing.get(frame.id)?.();
        return this.#unsubscribing.delete(frame.id);
      case 'message':
        return this.#emit('message', frame.encoding === 'base64' ? decodeBase64(frame.data) : frame.data);
      case 'refreshed':
        return this.#emit('refreshed', { expiresAt: frame.expiresAt });
      case 'error':
        return this.#refused(frame);
      default:
        // Frame types of later gateways are none of this version's business.
        return undefined;
    }
  }

  // An `error` frame: about a subscription (refused at first, so its promise rejects, or on
  // a resume, say because a renewed token no longer grants it: either way it is over), about
  // an unsubscribe, or about the connection. Each is also an `error` event, so that a
  // subscribe nobody awaited is not refused in silence.
  #refused(frame) {
    const error = new SluiceError(frame.error, { status: frame.status, id: frame.id });
    const subscription = this.#subscriptions.get(frame.id);
    if (subscription) {
      this.#subscriptions.delete(frame.id);
      subscription[END](error);
    }
    // An unsubscribe of what the gateway no longer had: done all the same.
    this.#unsubscribing.get(frame.id)?.();
    this.#unsubscribing.delete(frame.id);
    this.#emit('error', error);
  }
}
