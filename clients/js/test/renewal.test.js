// Token renewal through the real gateway: with a token callback, the client asks for a new
// token before the current one expires and presents it on the open connection, so the
// gateway (which closes a token's connection at its `exp` with 4001) never closes it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { renewalLead, tokenExpiry } from '../index.js';
import { connect } from './support/client.js';
import { startGateway, unique } from './support/gateway.js';
import { Inbox } from './support/wait.js';

let gateway;
before(async () => {
  gateway = await startGateway();
});
after(() => gateway?.stop());

test('a token is renewed before each expiry and the connection outlives them all', async (t) => {
  const key = unique('renewal');
  let calls = 0;
  // Each token lives 3 s: the first is renewed 1 s before its expiry, and so on.
  const token = async () => {
    calls += 1;
    return gateway.mint({ ttl: 3 });
  };
  const sluice = await connect(t, gateway, { token });
  const first = sluice.replyId;
  const disconnects = [];
  const refreshed = [];
  sluice.on('disconnected', (event) => disconnects.push(event));
  sluice.on('refreshed', (event) => refreshed.push(event));
  const inbox = new Inbox();
  await sluice.subscribe({ keys: [key] }, inbox.push);

  // Past two expiries of the tokens in turn.
  await new Promise((resolve) => setTimeout(resolve, 7_000));
  assert.deepEqual(disconnects, [], 'the gateway never closed the connection');
  assert.equal(sluice.replyId, first, 'the same connection');
  assert.ok(refreshed.length >= 2, `renewed ${refreshed.length} times`);
  assert.ok(calls >= 3, `the callback was asked ${calls} times`);
  assert.ok(Date.parse(refreshed.at(-1).expiresAt) > Date.now(), 'the last renewal expires later');
  await gateway.publish(key, 'still here');
  assert.deepEqual((await inbox.until((items) => items.length === 1, 'a record')).map((r) => r.value), [
    'still here',
  ]);
});

test('the expiry is read from the token, and renewal starts a tenth of its life ahead', () => {
  const payload = Buffer.from(JSON.stringify({ sub: 'x', exp: 1_800_000_000 })).toString('base64url');
  assert.equal(tokenExpiry(`e30.${payload}.sig`), 1_800_000_000);
  assert.equal(tokenExpiry('not a token'), null);
  assert.equal(tokenExpiry(`e30.${Buffer.from('{"sub":"x"}').toString('base64url')}.sig`), null);
  assert.equal(renewalLead(3_000), 1_000);
  assert.equal(renewalLead(300_000), 30_000);
  assert.equal(renewalLead(3_600_000), 60_000);
});
