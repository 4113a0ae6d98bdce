// Waiting on what happens, never on the clock: each wait ends at the event it waits for,
// and its bound only turns a hang into a failure that says what was awaited.

/** `promise`, or a rejection with `what()` after `ms`. */
export function within(ms, promise, what) {
  let timer;
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(typeof what === 'function' ? what() : what)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

/** The next `name` event of `sluice` for which `accept` holds. */
export function nextEvent(sluice, name, accept = () => true, ms = 15_000) {
  let off;
  const seen = new Promise((resolve) => {
    off = sluice.on(name, (value) => {
      if (accept(value)) resolve(value);
    });
  });
  return within(ms, seen, `no ${name} event within ${ms} ms`).finally(() => off());
}

/** What a callback receives, and a way to wait until it holds enough. */
export class Inbox {
  items = [];
  #waiters = new Set();

  /** The callback to hand out. */
  push = (item) => {
    this.items.push(item);
    for (const waiter of this.#waiters) {
      if (waiter.done()) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }
  };

  /** Waits until `done(items)` holds; returns the items. */
  until(done, what, ms = 15_000) {
    const check = () => done(this.items);
    const reached = check()
      ? Promise.resolve()
      : new Promise((resolve) => this.#waiters.add({ done: check, resolve }));
    return within(ms, reached, () => `${what} not received within ${ms} ms; got ${JSON.stringify(this.items)}`).then(
      () => this.items,
    );
  }

  /** Waits until it holds `n` items. */
  count(n, ms) {
    return this.until((items) => items.length >= n, `${n} items`, ms);
  }
}
