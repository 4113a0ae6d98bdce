// Reconnecting through the real gateway: dropped by the admin API, the client comes back
// with back-off, asks the token callback again, and every subscription resumes from its own
// cursor, with nothing missed and nothing twice.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { SluiceError } from '../index.js';
import { FAST, connect } from './support/client.js';
import { startGateway, unique } from './support/gateway.js';
import { Inbox, nextEvent } from './support/wait.js';

let gateway;
before(async () => {
  gateway = await startGateway();
});
after(() => gateway?.stop());

const values = (records) => records.map((r) => r.value);

// Waits until `inbox` holds a record of value `last`, and returns every value it holds.
async function through(inbox, last) {
  return values(await inbox.until((items) => items.some((r) => r.value === last), `record ${last}`));
}

// A promise and what settles it, for the test to open a gate when it chooses.
function gate() {
  let open;
  const opened = new Promise((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

test('every subscription resumes from its own cursor after a drop, with no gap and no duplicate', async (t) => {
  const token = await gateway.mint();
  let tokenCalls = 0;
  let hold = null; // while set, the token callback (and so the reconnect) waits for it
  const sluice = await connect(t, gateway, {
    token: async () => {
      tokenCalls += 1;
      if (hold) await hold.opened;
      return token;
    },
  });
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((k) => unique(k));
  const inboxes = { a: new Inbox(), b: new Inbox(), c: new Inbox(), d: new Inbox() };

  await gateway.publishAll(b, ['b1', 'b2', 'b3']);
  await sluice.subscribe({ keys: [a] }, inboxes.a.push);
  // `last` applies to the first opening only: a resume must not replay b2 and b3 again.
  await sluice.subscribe({ keys: [b], last: 2 }, inboxes.b.push);
  // No record before the drop: it resumes from the cursor of its `subscribed` answer.
  await sluice.subscribe({ keys: [c] }, inboxes.c.push);
  const iterated = await sluice.subscribe({ keys: [d] });
  (async () => {
    for await (const record of iterated) inboxes.d.push(record);
  })();

  await gateway.publishAll(a, ['a1']);
  await gateway.publishAll(b, ['b4']);
  await gateway.publishAll(d, ['d1']);
  await Promise.all([through(inboxes.a, 'a1'), through(inboxes.b, 'b4'), through(inboxes.d, 'd1')]);

  const first = sluice.replyId;
  hold = gate();
  const reconnecting = nextEvent(sluice, 'reconnecting');
  const disconnected = nextEvent(sluice, 'disconnected');
  await gateway.drop(first);
  assert.equal((await disconnected).code, 1000);
  const { attempt, delay } = await reconnecting;
  assert.equal(attempt, 0);
  assert.ok(delay >= FAST.initialDelay / 2 && delay <= FAST.initialDelay, `first delay ${delay}`);

  // Published while the client is away: the reconnect waits on the token callback.
  await gateway.publishAll(a, ['a2', 'a3']);
  await gateway.publishAll(b, ['b5']);
  await gateway.publishAll(c, ['c1', 'c2']);
  await gateway.publishAll(d, ['d2']);

  const answers = [];
  sluice.on('subscribed', (answer) => answers.push(answer));
  const reconnected = nextEvent(sluice, 'connected');
  hold.open();
  const { replyId } = await reconnected;
  assert.notEqual(replyId, first);
  assert.equal(tokenCalls, 2, 'the token callback is asked again on reconnect');

  await gateway.publishAll(a, ['a4']);
  await gateway.publishAll(b, ['b6']);
  await gateway.publishAll(c, ['c3']);
  await gateway.publishAll(d, ['d3']);
  assert.deepEqual(await through(inboxes.a, 'a4'), ['a1', 'a2', 'a3', 'a4']);
  assert.deepEqual(await through(inboxes.b, 'b6'), ['b2', 'b3', 'b4', 'b5', 'b6']);
  assert.deepEqual(await through(inboxes.c, 'c3'), ['c1', 'c2', 'c3']);
  assert.deepEqual(await through(inboxes.d, 'd3'), ['d1', 'd2', 'd3']);

  assert.deepEqual(
    answers.map((x) => [x.id, x.resumed]),
    [
      ['s1', true],
      ['s2', true],
      ['s3', true],
      ['s4', true],
    ],
  );
  const client = await gateway.client(replyId);
  assert.deepEqual(client.subscriptions.map((s) => s.id), ['s1', 's2', 's3', 's4']);
});

test('a token the gateway refuses on reconnect is replaced by the next one the callback gives', async (t) => {
  const prefix = unique('renewed');
  const grant = { keys: [`${prefix}-*`] };
  const tokens = [await gateway.mint(grant), 'an.expired.token', await gateway.mint(grant)];
  let calls = 0;
  const sluice = await connect(t, gateway, { token: () => tokens[Math.min(calls++, tokens.length - 1)] });
  const inbox = new Inbox();
  await sluice.subscribe({ pattern: `${prefix}-*` }, inbox.push);
  await gateway.publish(`${prefix}-1`, 'before');
  await through(inbox, 'before');

  const attempts = [];
  sluice.on('reconnecting', ({ attempt }) => attempts.push(attempt));
  const refused = nextEvent(sluice, 'error');
  const reconnected = nextEvent(sluice, 'connected');
  await gateway.drop(sluice.replyId);
  const error = await refused;
  assert.ok(error instanceof SluiceError);
  assert.match(error.message, /401/);
  await gateway.publish(`${prefix}-2`, 'during');
  await reconnected;
  assert.equal(calls, 3);
  assert.deepEqual(attempts, [0, 1], 'a failed attempt waits longer before the next');
  await gateway.publish(`${prefix}-3`, 'after');
  assert.deepEqual(await through(inbox, 'after'), ['before', 'during', 'after']);
});

test('a subscription the renewed token no longer grants ends with the refusal', async (t) => {
  const prefix = unique('narrowed');
  const tokens = [await gateway.mint({ keys: [`${prefix}-*`] }), await gateway.mint({ keys: [`${prefix}-kept`] })];
  let calls = 0;
  const sluice = await connect(t, gateway, { token: () => tokens[Math.min(calls++, 1)] });
  const kept = new Inbox();
  await sluice.subscribe({ keys: [`${prefix}-kept`] }, kept.push);
  const lost = await sluice.subscribe({ keys: [`${prefix}-lost`] });
  const loop = (async () => {
    for await (const record of lost) void record;
  })();

  const refusal = nextEvent(sluice, 'error');
  await gateway.drop(sluice.replyId);
  const error = await refusal;
  assert.equal(error.status, 403);
  assert.equal(error.id, lost.id);
  await assert.rejects(loop, { name: 'SluiceError', status: 403 });
  await gateway.publish(`${prefix}-kept`, 'still here');
  assert.deepEqual(await through(kept, 'still here'), ['still here']);
});

test('with reconnect off, a drop is final', async (t) => {
  const sluice = await connect(t, gateway, { reconnect: false });
  const reconnecting = [];
  sluice.on('reconnecting', (r) => reconnecting.push(r));
  const disconnected = nextEvent(sluice, 'disconnected');
  await gateway.drop(sluice.replyId, 4000, 'go away');
  assert.deepEqual(await disconnected, { code: 4000, reason: 'go away' });
  // A reconnect would have been planned in the same turn as the disconnected event.
  assert.deepEqual(reconnecting, []);
  assert.equal(sluice.connected, false);
});

test('refresh hands the gateway a fresh token from the callback on the open connection', async (t) => {
  let calls = 0;
  const token = await gateway.mint();
  const sluice = await connect(t, gateway, {
    token: () => {
      calls += 1;
      return token;
    },
  });
  assert.equal(await sluice.refresh(), true);
  assert.equal(calls, 2);
  // Whatever this gateway answers, the connection stays and keeps serving.
  sluice.on('error', () => {});
  await sluice.subscribe({ keys: [unique('after-refresh')] });
  assert.equal(sluice.connected, true);
});
