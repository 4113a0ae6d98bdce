// The wait between reconnect attempts: exponential, capped, and jittered so that the
// clients one gateway restart drops do not all come back at once.

import assert from 'node:assert/strict';
import test from 'node:test';

import { backoff } from '../index.js';

const noJitter = () => 0; // random() = 0 takes nothing off: the ceiling itself
const mostJitter = () => 0.999_999; // random() close to 1 takes off almost all `jitter` allows

test('the wait doubles from the initial delay with each failed attempt', () => {
  const waits = [0, 1, 2, 3, 4].map((attempt) => backoff(attempt, {}, noJitter));
  assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000]);
  const custom = [0, 1, 2].map((attempt) => backoff(attempt, { initialDelay: 100, factor: 3 }, noJitter));
  assert.deepEqual(custom, [100, 300, 900]);
});

test('the wait never exceeds the maximum, however long the outage', () => {
  assert.equal(backoff(6, {}, noJitter), 30_000);
  assert.equal(backoff(10_000, {}, noJitter), 30_000);
  assert.equal(backoff(10_000, { maxDelay: 2000 }, noJitter), 2000);
  assert.equal(backoff(Number.MAX_SAFE_INTEGER, {}, Math.random) <= 30_000, true);
});

test('jitter takes off at most its fraction of the wait', () => {
  assert.equal(backoff(2, { jitter: 0.5 }, mostJitter), 1000);
  assert.equal(backoff(2, { jitter: 1 }, mostJitter), 0);
  for (let i = 0; i < 1000; i++) {
    const attempt = i % 8;
    const ceiling = Math.min(30_000, 500 * 2 ** attempt);
    const wait = backoff(attempt);
    assert.ok(wait >= ceiling / 2 && wait <= ceiling, `attempt ${attempt}: ${wait} outside [${ceiling / 2}, ${ceiling}]`);
  }
});

test('clients dropped together spread their reconnects', () => {
  const waits = Array.from({ length: 1000 }, () => backoff(3));
  // 1000 draws over [2000, 4000]: nearly all distinct, and both halves of the range used.
  assert.ok(new Set(waits).size > 500, `only ${new Set(waits).size} distinct waits`);
  assert.ok(waits.some((w) => w < 2500) && waits.some((w) => w > 3500), 'the jitter does not spread the waits');
});

test('without jitter or without an initial delay the wait is exact and never NaN', () => {
  assert.equal(backoff(3, { jitter: 0 }), 4000);
  assert.equal(backoff(0, { initialDelay: 0 }), 0);
  assert.equal(backoff(5000, { initialDelay: 0 }), 0);
});
