// Drives the Sluice console in headless Chromium, as an operator would. Run by
// tests/console.rs, which starts the gateway and its WebSocket clients and, once this
// script has finished, checks on those sockets what the console did to them.
//
// Input (environment):
//   CONSOLE_URL       the console page
//   ADMIN_TOKEN       the admin token to sign in with
//   CLIENT_IDS        comma-separated replyIds the table must list
//   SUBSCRIPTIONS     JSON {replyId: [[text, …] per subscription]}: what its row must show
//   MULTIPLEXED       replyId of the multiplexed client (sluice.v1)
//   SEND_TO           replyId to message through its row
//   DISCONNECT        replyId to close through its row (code 4001)
//   BROADCAST_KEY     key for the keyed broadcast; EXPECT_KEY_DELIVERED, EXPECT_ALL_DELIVERED
//   PUBLISH_KEY       key to publish a record to
//   MARKUP_FROM       replyId of a client whose last message, MARKUP, is HTML: shown as text
//   WATCH_KEY         key, pattern (or *) for the data pane; its records must hold WATCH_TEXT
//   SCREENSHOT        where to write a PNG of the console at work (optional)
//   CHROMIUM          the browser (default /usr/bin/chromium)
// Output: one JSON line per step on stdout, the last {"ok":true} or {"ok":false,"error":…};
// exit code 0 only when every check passed.

import { withBrowser } from './chromium.mjs';

const SENT_TEXT = 'hello from the console';
const CLOSE_CODE = '4001';
const CLOSE_REASON = 'bye from the console';
const KEYED_TEXT = 'to one key from the console';
const ALL_TEXT = 'to everyone from the console';
const PUBLISHED = '{"from":"console"}';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const say = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function main() {
  const url = env('CONSOLE_URL');
  const token = env('ADMIN_TOKEN');
  const ids = env('CLIENT_IDS').split(',');
  const sendTo = env('SEND_TO');
  const disconnect = env('DISCONNECT');
  const watchKey = env('WATCH_KEY');
  const watchText = env('WATCH_TEXT');
  await withBrowser('console', { viewport: { width: 1400, height: 900 } }, async (context) => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && !/Failed to load resource/.test(m.text()) && problems.push(m.text()));
    try {
      await run(page, { url, token, ids, sendTo, disconnect, watchKey, watchText });
      check(problems.length === 0, `the page reported errors: ${problems.join('; ')}`);
      say('done');
    } catch (error) {
      if (process.env.FAILURE_SCREENSHOT) await page.screenshot({ path: process.env.FAILURE_SCREENSHOT }).catch(() => {});
      throw new Error(`${error.message}${problems.length ? ` (page errors: ${problems.join('; ')})` : ''}`);
    }
  });
}

async function run(page, { url, token, ids, sendTo, disconnect, watchKey, watchText }) {
  await page.goto(url);

  // A wrong token is refused with a message; the right one opens the console.
  await page.locator('#login').waitFor();
  await page.fill('#login-token', 'not-the-admin-token-at-all');
  await page.press('#login-token', 'Enter');
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  check(await page.locator('#console').isHidden(), 'the console opened with a wrong token');
  say('wrong token refused', { message: await page.textContent('#login-error') });
  await page.fill('#login-token', token);
  await page.click('#login-form button[type=submit]');
  await page.locator('#console').waitFor();

  // Kept for the session: a reload does not ask again.
  await page.reload();
  await page.locator('#console').waitFor();
  check(await page.locator('#login').isHidden(), 'the token was asked again after a reload');
  say('signed in');

  // Every connected client is listed, with its columns.
  const row = (id) => page.locator(`#clients tbody tr[data-id="${id}"]`);
  for (const id of ids) await row(id).waitFor();
  const cells = await row(sendTo).locator('td').allTextContents();
  check(cells[0] === sendTo, `first column is not the replyId: ${cells[0]}`);
  // The replica holding the client: this gateway, the node /api/info names.
  const node = await page.evaluate(
    async (t) => (await (await fetch('/api/info', { headers: { Authorization: `Bearer ${t}` } })).json()).node,
    token,
  );
  check(node && cells[3] === node, `node column should be this gateway's node ${node}: ${cells[3]}`);
  check(/\d+ \/ \d+/.test(cells[7]), `messages column: ${cells[7]}`);
  say('clients listed', { ids, row: cells });

  // Each client's subscriptions, in its row: a plain client's one, and each of the
  // multiplexed client's with its id, pattern, keys and conditions.
  const expected = JSON.parse(env('SUBSCRIPTIONS'));
  for (const [id, subscriptions] of Object.entries(expected)) {
    const lines = row(id).locator('td.subs .subn');
    const texts = await lines.allTextContents();
    check(texts.length === subscriptions.length, `${id} shows ${texts.length} subscriptions: ${JSON.stringify(texts)}`);
    subscriptions.forEach((parts, i) => {
      for (const part of parts) check(texts[i].includes(part), `subscription ${i + 1} of ${id} lacks ${part}: ${texts[i]}`);
    });
  }
  const multiplexed = env('MULTIPLEXED');
  const tags = await row(multiplexed).locator('td .tag').allTextContents();
  check(tags.includes('sluice.v1'), `the multiplexed client is not marked so: ${JSON.stringify(tags)}`);
  check((await row(sendTo).locator('td .tag').count()) === 0, 'a plain client is tagged');
  // The filter finds clients by what they subscribed to.
  await page.fill('#client-filter', 'sensor-*');
  await page.waitForFunction(
    (id) => [...document.querySelectorAll('#clients tbody tr')].map((tr) => tr.dataset.id).join() === id,
    multiplexed,
  );
  await page.fill('#client-filter', '');
  for (const id of ids) await row(id).waitFor();
  say('subscriptions shown', { multiplexed: await row(multiplexed).locator('td.subs').textContent() });

  // What a client sent or subscribed to is untrusted: its markup is shown as text and never
  // becomes elements (a header condition of the multiplexed client holds markup too).
  const markup = env('MARKUP');
  await row(env('MARKUP_FROM')).locator('td.msg', { hasText: markup }).first().waitFor();
  check((await page.locator('#clients tbody img, #clients tbody b').count()) === 0, 'client data became markup');
  check((await page.evaluate(() => window.pwned)) === undefined, 'client data ran as script');
  say('client data shown as text');

  // A message to one client, through its row.
  await row(sendTo).locator('button[data-action=send]').click();
  await page.locator('#send-dialog').waitFor();
  await page.fill('#send-body', SENT_TEXT);
  await page.click('#send-form button[type=submit]');
  await page.locator('#toast', { hasText: `queued for ${sendTo}` }).waitFor();
  say('sent', { to: sendTo });

  // A refused request says why: 1005 may not be sent in a close frame.
  await row(sendTo).locator('button[data-action=disconnect]').click();
  await page.fill('#disconnect-code', '1005');
  await page.click('#disconnect-form button[type=submit]');
  await page.locator('#toast.bad', { hasText: '400: close code 1005 cannot be sent' }).waitFor();
  say('refusal shown', { toast: await page.textContent('#toast') });

  // Disconnect one, with a code and a reason; its row goes.
  await row(disconnect).locator('button[data-action=disconnect]').click();
  await page.locator('#disconnect-dialog').waitFor();
  await page.fill('#disconnect-code', CLOSE_CODE);
  await page.fill('#disconnect-reason', CLOSE_REASON);
  await page.click('#disconnect-form button[type=submit]');
  await row(disconnect).waitFor({ state: 'detached' });
  say('disconnected', { id: disconnect });

  // Events: the disconnect just made, and client messages, arrive live.
  const events = page.locator('#events-list li');
  await events.filter({ hasText: `${CLOSE_CODE} ${CLOSE_REASON}` }).first().waitFor();
  await events.filter({ hasText: 'message' }).first().waitFor();
  say('events shown', { count: await events.count() });

  // The filter hides what does not match, and shows all again when cleared. Events keep
  // arriving, so each look at the list is taken at one instant.
  const look = () => page.$$eval('#events-list li', (items) => ({
    total: items.length,
    shown: items.filter((li) => li.checkVisibility()).map((li) => li.textContent),
  }));
  await page.fill('#events-filter', 'disconnect');
  const filtered = await look();
  check(filtered.shown.length >= 1, 'the filter hid the disconnect event');
  check(filtered.shown.every((t) => t.includes('disconnect')), `the filter let through: ${filtered.shown.join(' | ')}`);
  check(filtered.total > filtered.shown.length, 'the filter hid nothing');
  await page.fill('#events-filter', 'nothing-matches-this');
  check((await look()).shown.length === 0, 'a filter matching nothing still shows events');
  await page.fill('#events-filter', '');
  const cleared = await look();
  check(cleared.shown.length === cleared.total, 'clearing the filter did not show every event');
  say('events filtered', { matched: filtered.shown.length, of: filtered.total });

  // Stop: no more events. Start: they flow again.
  await page.click('#events-toggle');
  await page.locator('#events-state', { hasText: 'stopped' }).waitFor();
  const stoppedAt = await events.count();
  await page.waitForTimeout(1500);
  check((await events.count()) === stoppedAt, 'events kept arriving after Stop');
  await page.click('#events-toggle');
  await page.waitForFunction((n) => document.querySelectorAll('#events-list li').length > n, stoppedAt);
  say('events stopped and started');

  // Broadcast to one key, then to everyone.
  await page.fill('#broadcast-key', env('BROADCAST_KEY'));
  await page.fill('#broadcast-body', KEYED_TEXT);
  const keyed = await submitted(page, '#broadcast-form', '#broadcast-result');
  check(keyed.status === '200', `keyed broadcast answered ${keyed.status} ${JSON.stringify(keyed.body)}`);
  check(String(keyed.body.delivered) === env('EXPECT_KEY_DELIVERED'), `keyed broadcast: ${JSON.stringify(keyed.body)}`);
  await page.fill('#broadcast-key', '');
  await page.fill('#broadcast-body', ALL_TEXT);
  const all = await submitted(page, '#broadcast-form', '#broadcast-result');
  check(String(all.body.delivered) === env('EXPECT_ALL_DELIVERED'), `broadcast to all: ${JSON.stringify(all.body)}`);
  say('broadcast', { keyed: keyed.body, all: all.body });

  // Publish a record.
  await page.fill('#publish-key', env('PUBLISH_KEY'));
  await page.fill('#publish-body', PUBLISHED);
  const published = await submitted(page, '#publish-form', '#publish-result');
  check(published.status === '202', `publish answered ${published.status} ${JSON.stringify(published.body)}`);
  say('published', { answer: published.body });

  // The data pane: the client library on the subscription port, with a token the console minted.
  await page.fill('#data-key', watchKey);
  await page.click('#data-toggle');
  await page.locator('#data-state', { hasText: 'connected to' }).waitFor();
  const records = page.locator('#data-list li', { hasText: watchText });
  await page.waitForFunction(
    (text) => [...document.querySelectorAll('#data-list li')].filter((li) => li.textContent.includes(text)).length >= 2,
    watchText,
  );
  say('data shown', { state: await page.textContent('#data-state'), first: await records.first().textContent() });

  // Its own connection is a client like any other: user console, multiplexed, watching
  // what was asked.
  const own = page.locator('#clients tbody tr').filter({ has: page.locator('td:nth-child(3)', { hasText: /^console$/ }) });
  await own.locator('td.subs .subn', { hasText: `: ${watchKey}` }).waitFor();
  await own.locator('td .tag', { hasText: 'sluice.v1' }).waitFor();
  say('own connection listed', { subscriptions: await own.locator('td.subs').textContent() });

  if (process.env.SCREENSHOT) {
    // Let the panes fill and the relative times move on, as an operator would see them.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: process.env.SCREENSHOT });
    say('screenshot', { path: process.env.SCREENSHOT });
  }

  // Stop watching closes the socket.
  await page.click('#data-toggle');
  await page.locator('#data-state', { hasText: 'stopped' }).waitFor();

  // Forget: back to the sign-in, and a reload does not remember the token.
  await page.click('#forget');
  await page.locator('#login').waitFor();
  check(
    (await page.evaluate(() => sessionStorage.length)) === 0,
    'the token is still in session storage after Forget',
  );
  await page.reload();
  await page.locator('#login').waitFor();
  check(await page.locator('#console').isHidden(), 'the console opened after the token was forgotten');
  say('forgotten');
}

/** Submits a form and waits for its result; returns the status and the JSON body shown. */
async function submitted(page, form, output) {
  await page.$eval(output, (o) => o.replaceChildren());
  await page.click(`${form} button[type=submit]`);
  await page.waitForFunction((sel) => document.querySelector(sel).dataset.status !== undefined
    && document.querySelector(sel).querySelector('code') !== null, output);
  const status = await page.$eval(output, (o) => o.dataset.status);
  const text = await page.$eval(output, (o) => o.querySelector('code').textContent);
  await page.$eval(output, (o) => delete o.dataset.status);
  return { status, body: text ? JSON.parse(text) : null };
}

main().then(
  () => console.log(JSON.stringify({ ok: true })),
  (error) => {
    console.log(JSON.stringify({ ok: false, error: error.message }));
    process.exitCode = 1;
  },
);
