// Subscriptions through the real gateway: callbacks and async iteration, several on one
// socket, unsubscribe, values of every kind, messages both ways, and refusals.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import { Sluice, SluiceError } from '../index.js';
import { connect } from './support/client.js';
import { BASIC, startGateway, unique } from './support/gateway.js';
import { Inbox, nextEvent } from './support/wait.js';

let gateway;
before(async () => {
  gateway = await startGateway();
});
after(() => gateway?.stop());

const values = (records) => records.map((r) => r.value);

test('a callback receives the records of its keys with their envelope and cursor', async (t) => {
  const sluice = await connect(t, gateway);
  const key = unique('sensor');
  const inbox = new Inbox();
  const subscription = await sluice.subscribe({ keys: [key] }, inbox.push);
  assert.match(subscription.id, /^s\d+$/);
  assert.equal(typeof subscription.cursor, 'string', 'the subscribed answer gives a cursor');

  await gateway.publish(unique('other'), 'not for this subscription');
  await gateway.publishAll(key, ['{"temp":20}', 'plain text']);
  const [json, text] = await inbox.count(2);
  assert.deepEqual(json.value, { temp: 20 }, 'a JSON value arrives parsed');
  assert.equal(text.value, 'plain text');
  assert.equal(json.key, key);
  assert.equal(typeof json.topic, 'string');
  assert.equal(text.offset, json.offset + 1);
  assert.equal(typeof json.cursor, 'string');
  assert.notEqual(json.cursor, text.cursor);
  assert.equal(subscription.cursor, text.cursor, 'the subscription is where its last record was');
  assert.equal(json.type, undefined, 'the frame type is not part of the record');
  assert.equal(inbox.items.length, 2);
});

test('async iteration yields records in order, and leaving the loop unsubscribes', async (t) => {
  const sluice = await connect(t, gateway);
  const key = unique('iter');
  const subscription = await sluice.subscribe({ keys: [key] });
  await gateway.publishAll(key, ['1', '2', '3']);
  const got = [];
  for await (const record of subscription) {
    got.push(record.value);
    if (got.length === 3) break;
  }
  assert.deepEqual(got, [1, 2, 3]);
  const client = await gateway.client(sluice.replyId);
  assert.deepEqual(client.subscriptions, [], 'break unsubscribed on the gateway');
});

test('two subscriptions share one socket, and a record matching both arrives once for each', async (t) => {
  const sluice = await connect(t, gateway);
  const prefix = unique('both');
  const exact = new Inbox();
  const pattern = new Inbox();
  await sluice.subscribe({ keys: [`${prefix}-1`] }, exact.push);
  await sluice.subscribe({ pattern: `${prefix}-*` }, pattern.push);

  await gateway.publish(`${prefix}-1`, 'matches both');
  await gateway.publish(`${prefix}-2`, 'matches the pattern');
  assert.deepEqual(values(await pattern.count(2)), ['matches both', 'matches the pattern']);
  assert.deepEqual(values(await exact.count(1)), ['matches both']);

  const client = await gateway.client(sluice.replyId);
  assert.equal(client.multiplexed, true);
  assert.deepEqual(client.subscriptions.map((s) => s.id).sort(), ['s1', 's2']);
  // The record that came twice came on one connection.
  assert.equal(exact.items[0].cursor, pattern.items[0].cursor);
});

test('no record of a subscription follows its unsubscribe', async (t) => {
  const sluice = await connect(t, gateway);
  const key = unique('unsub');
  const leaving = new Inbox();
  const staying = new Inbox();
  const subscription = await sluice.subscribe({ keys: [key] }, leaving.push);
  await sluice.subscribe({ keys: [key] }, staying.push);
  await gateway.publish(key, 'before');
  await leaving.count(1);

  await subscription.unsubscribe();
  const client = await gateway.client(sluice.replyId);
  assert.deepEqual(
    client.subscriptions.map((s) => s.id),
    ['s2'],
  );
  await gateway.publishAll(key, ['after', 'sentinel']);
  // Once the other subscription has the sentinel, whatever was coming has come.
  assert.deepEqual(values(await staying.count(3)), ['before', 'after', 'sentinel']);
  assert.deepEqual(values(leaving.items), ['before']);
});

test('binary values and messages arrive as bytes, text messages as text', async (t) => {
  const sluice = await connect(t, gateway);
  const key = unique('bytes');
  const inbox = new Inbox();
  await sluice.subscribe({ keys: [key] }, inbox.push);
  const bytes = new Uint8Array([0xff, 0x00, 0xfe, 0x41]);
  await gateway.publish(key, bytes);
  const [record] = await inbox.count(1);
  assert.ok(record.value instanceof Uint8Array, `a ${typeof record.value}`);
  assert.deepEqual([...record.value], [...bytes]);
  assert.equal(record.valueEncoding, undefined);

  const text = nextEvent(sluice, 'message');
  await gateway.message(sluice.replyId, 'hello from the operator');
  assert.equal(await text, 'hello from the operator');
  const binary = nextEvent(sluice, 'message');
  await gateway.message(sluice.replyId, bytes);
  assert.deepEqual([...(await binary)], [...bytes]);
});

test('a message sent by the client reaches the gateway', async (t) => {
  const sluice = await connect(t, gateway);
  const events = await gateway.events();
  t.after(() => events.close());
  assert.equal(sluice.send({ ack: 1 }), true);
  const event = await events.find((e) => e.type === 'message' && e.replyId === sluice.replyId);
  assert.equal(event.data, '{"ack":1}');
});

test('a refused subscribe rejects with the status, and the connection carries on', async (t) => {
  const sluice = await connect(t, gateway);
  const errors = [];
  sluice.on('error', (e) => errors.push(e));
  const key = unique('carry-on');
  const inbox = new Inbox();
  await sluice.subscribe({ keys: [key] }, inbox.push);

  const refusal = (selector, status) =>
    assert.rejects(sluice.subscribe(selector), (e) => {
      assert.ok(e instanceof SluiceError);
      assert.equal(e.status, status, e.message);
      assert.match(e.id, /^s\d+$/);
      return true;
    });
  await refusal({ topic: 'no-such-topic' }, 404);
  await refusal({ pattern: '' }, 400);
  await refusal({ keys: [key], cursor: '!!' }, 400);
  assert.deepEqual(
    errors.map((e) => e.status),
    [404, 400, 400],
    'each refusal is also an error event',
  );

  await gateway.publish(key, 'still delivering');
  assert.deepEqual(values(await inbox.count(1)), ['still delivering']);
  assert.equal(sluice.connected, true);
});

test('a token that does not grant a selector gets 403 for it, and the others open', async (t) => {
  const token = await gateway.mint({ keys: ['granted-*'] });
  const sluice = await connect(t, gateway, { token });
  const inbox = new Inbox();
  const key = unique('granted');
  await sluice.subscribe({ keys: [key] }, inbox.push);
  await assert.rejects(sluice.subscribe({ pattern: 'other-*' }), { name: 'SluiceError', status: 403 });
  await assert.rejects(sluice.subscribe(), { status: 403 });
  await gateway.publish(key, 'granted');
  assert.deepEqual(values(await inbox.count(1)), ['granted']);
  assert.equal((await gateway.client(sluice.replyId)).user, 'client-tests', 'connected with the token');
});

test('beyond the gateway limit a subscribe gets 429', async (t) => {
  const limited = await startGateway(['--max-subscriptions', '1']);
  t.after(() => limited.stop());
  const sluice = await connect(t, limited);
  const first = await sluice.subscribe({ keys: ['a'] });
  await assert.rejects(sluice.subscribe({ keys: ['b'] }), { status: 429 });
  // An unsubscribe makes room again.
  await first.unsubscribe();
  await sluice.subscribe({ keys: ['c'] });
});

test('subscribe before the connection is up is sent once it is', async (t) => {
  const sluice = new Sluice(gateway.url, { WebSocket, headers: { Authorization: BASIC } });
  t.after(() => sluice.close());
  assert.equal(sluice.connected, false);
  const key = unique('early');
  const inbox = new Inbox();
  const subscribed = sluice.subscribe({ keys: [key] }, inbox.push);
  await subscribed;
  await gateway.publish(key, 'early');
  assert.deepEqual(values(await inbox.count(1)), ['early']);
});

test('close ends every subscription and refuses new ones', async (t) => {
  const sluice = await connect(t, gateway);
  const subscription = await sluice.subscribe({ keys: [unique('closing')] });
  const pending = sluice.subscribe({ keys: [unique('never-answered')] });
  const loop = (async () => {
    const got = [];
    for await (const record of subscription) got.push(record);
    return got;
  })();
  const disconnected = nextEvent(sluice, 'disconnected');
  await sluice.close();
  assert.deepEqual(await loop, [], 'the loop ends');
  assert.equal((await disconnected).code, 1000);
  assert.equal(sluice.connected, false);
  assert.equal(sluice.replyId, null);
  await assert.rejects(pending, SluiceError);
  await assert.rejects(sluice.subscribe(), /closed/);
  assert.equal(sluice.send('late'), false);
});
