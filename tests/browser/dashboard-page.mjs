// Drives the dashboard example (examples/dashboard/index.html) in headless Chromium, as
// someone following examples/README.md would use it: the repository's root served by
// `python3 -m http.server`, the page importing the client library from it, a token from
// `sluice token`. Run by tests/examples.rs, which checks what this script reports.
//
// Input (environment):
//   PAGE_URL          the page, with ?url=&token=&pattern=&key= so that it connects at once
//   REFUSED_PAGE_URL  the same page from an origin the gateway does not allow
//   GATEWAY_HTTP      the gateway's HTTP address, for the admin API
//   ADMIN_TOKEN       the admin token
//   PATTERN           the page's pattern subscription (the demo's keys match it)
//   PATTERN_KEY       a key the pattern matches that only this script publishes to
//   KEY               the page's exact-key subscription
//   BEFORE            JSON array of values published to KEY before the page opens (its `last`)
//   RECORDS           JSON array of four values: two for PATTERN_KEY and two for KEY, live
//   MARKUP            a record value that is HTML: the page must show it as text
//   AFTER             JSON array of two values published after a reconnect (PATTERN_KEY, KEY)
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   SCREENSHOT        where to write a PNG of the page at work (optional)
// Output: one JSON line per step on stdout, the last {"ok":true} or {"ok":false,"error":…};
// exit code 0 only when every check passed.

import { withBrowser } from './chromium.mjs';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const say = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function admin(method, path, body) {
  const response = await fetch(`${env('GATEWAY_HTTP')}${path}`, {
    method,
    headers: { Authorization: `Bearer ${env('ADMIN_TOKEN')}` },
    body,
  });
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${await response.text()}`);
  return response;
}

const publish = (key, value) => admin('POST', `/api/publish/${encodeURIComponent(key)}`, value);

async function main() {
  await withBrowser('dashboard-page', { viewport: { width: 1280, height: 860 } }, async (context) => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    try {
      await run(page);
      check(problems.length === 0, `the page reported errors: ${problems.join('; ')}`);
      await refused(context);
      say('done');
    } catch (error) {
      if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT }).catch(() => {});
      throw new Error(`${error.message}${problems.length ? ` (page errors: ${problems.join('; ')})` : ''}`);
    }
  });
}

const text = (page, selector) => page.locator(selector).textContent();

// Waits until the page shows a connection id other than `previous`, and returns it.
async function replyId(page, previous) {
  await page.waitForFunction((p) => {
    const id = document.getElementById('reply-id').textContent;
    return id !== '-' && id !== p;
  }, previous);
  return text(page, '#reply-id');
}

// What the pattern's panel shows: each tile's key, count, latest value and earlier ones.
const tiles = (page) => page.$$eval('#tiles .tile', (all) => all.map((tile) => ({
  key: tile.dataset.key,
  count: Number.parseInt(tile.querySelector('.count').textContent, 10),
  latest: tile.querySelector('.body').title,
  shown: tile.querySelector('.body').textContent,
  earlier: [...tile.querySelectorAll('.earlier li')].map((li) => li.textContent),
})));

// The key's panel: its values, newest first.
const listed = (page) => page.$$eval('#key-records .value', (all) => all.map((v) => v.textContent));

// Waits until the tile of `key` has shown `count` records.
const tileCount = (page, key, count) => page.waitForFunction(
  ([k, n]) => {
    const tile = [...document.querySelectorAll('#tiles .tile')].find((t) => t.dataset.key === k);
    return tile && Number.parseInt(tile.querySelector('.count').textContent, 10) >= n;
  },
  [key, count],
);

const listedCount = (page, count) => page.waitForFunction(
  (n) => document.querySelectorAll('#key-records li').length >= n,
  count,
);

async function run(page) {
  const pattern = env('PATTERN');
  const patternKey = env('PATTERN_KEY');
  const key = env('KEY');
  const before = JSON.parse(env('BEFORE'));
  const [p1, p2, k1, k2] = JSON.parse(env('RECORDS'));
  const markup = env('MARKUP');
  const [p3, k3] = JSON.parse(env('AFTER'));

  // Records of the exact key from before the page opened: its `last` brings them.
  for (const value of before) await publish(key, value);
  await page.goto(env('PAGE_URL'));
  const first = await replyId(page, '-');
  await page.waitForFunction(() => document.getElementById('key-note').dataset.last !== undefined
    && document.getElementById('pattern-note').dataset.last !== undefined);
  const lastKey = await page.locator('#key-note').getAttribute('data-last');
  const lastPattern = Number(await page.locator('#pattern-note').getAttribute('data-last'));
  check(lastKey === String(before.length), `the key's subscription started with ${lastKey} records, not ${before.length}`);
  check(lastPattern > 0 && lastPattern <= 10, `the pattern's subscription started with ${lastPattern} records`);
  await listedCount(page, before.length);
  check(
    JSON.stringify(await listed(page)) === JSON.stringify([...before].reverse()),
    `the key's panel shows ${JSON.stringify(await listed(page))} before any live record`,
  );
  // The demo's sensors, through the pattern.
  await page.waitForFunction(() => document.querySelectorAll('#tiles .tile').length >= 3);
  say('connected', { replyId: first, lastKey, lastPattern, tiles: (await tiles(page)).map((t) => t.key) });

  // Live records of both subscriptions, on the one connection.
  await publish(patternKey, p1);
  await publish(key, k1);
  await publish(patternKey, p2);
  await publish(key, k2);
  await publish(patternKey, markup);
  await tileCount(page, patternKey, 3);
  await listedCount(page, before.length + 2);
  const tile = (await tiles(page)).find((t) => t.key === patternKey);
  check(tile.count === 3, `the ${patternKey} tile counts ${tile.count} records`);
  check(tile.latest === markup && tile.shown === markup, `the ${patternKey} tile shows ${tile.shown}`);
  check(JSON.stringify(tile.earlier) === JSON.stringify([p2, p1]), `earlier values ${JSON.stringify(tile.earlier)}`);
  const keyed = await listed(page);
  check(JSON.stringify(keyed) === JSON.stringify([k2, k1, ...[...before].reverse()]), `the key's panel: ${JSON.stringify(keyed)}`);
  check(!(await tiles(page)).some((t) => t.key === key), 'the exact key showed up under the pattern');
  check((await page.evaluate(() => window.pwned)) === undefined, 'a record was run as markup');
  check((await page.locator('#tiles img, #key-records img').count()) === 0, 'a record was inserted as markup');
  say('records shown', { tile, keyed });

  // One connection carries both subscriptions.
  const client = await (await admin('GET', `/api/clients/${first}`)).json();
  check(client.multiplexed === true, `the page's connection is not multiplexed: ${JSON.stringify(client)}`);
  const { clients } = await (await admin('GET', '/api/clients')).json();
  const mine = clients.filter((c) => c.user === client.user);
  check(mine.length === 1, `the page holds ${mine.length} connections`);
  say('one connection', { subscriptions: client.subscriptions, user: client.user });

  // The gateway going away (1001): the library reconnects and resumes both subscriptions
  // from their last records, so that what comes next shows once and nothing shows twice.
  await admin('DELETE', `/api/clients/${first}?code=1001&reason=${encodeURIComponent('shutting down')}`);
  const second = await replyId(page, first);
  await publish(patternKey, p3);
  await publish(key, k3);
  await tileCount(page, patternKey, 4);
  await listedCount(page, before.length + 3);
  // Let anything sent twice arrive before looking.
  await page.waitForTimeout(500);
  const after = (await tiles(page)).find((t) => t.key === patternKey);
  check(after.count === 4 && after.latest === p3, `after the reconnect the tile shows ${JSON.stringify(after)}`);
  const keyedAfter = await listed(page);
  check(
    JSON.stringify(keyedAfter) === JSON.stringify([k3, k2, k1, ...[...before].reverse()]),
    `after the reconnect the key's panel shows ${JSON.stringify(keyedAfter)}`,
  );
  const connections = await text(page, '#connections');
  check(connections === '2', `connections: ${connections}`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  say('resumed', { replyId: second, state: await text(page, '#state'), keyed: keyedAfter });
}

// From an origin the gateway was not told about, the upgrade gets 403: the page can only
// see a close before open, and says what to check.
async function refused(context) {
  const page = await context.newPage();
  await page.goto(env('REFUSED_PAGE_URL'));
  const hint = page.locator('#hint');
  await hint.waitFor({ state: 'visible' });
  const origin = new URL(env('REFUSED_PAGE_URL')).origin;
  const said = await hint.textContent();
  check(said.includes(`--allowed-origins ${origin}`), `the refused page's hint does not name its origin: ${said}`);
  check((await text(page, '#reply-id')) === '-', 'the page from a refused origin was given a connection');
  say('refused origin', { hint: said, state: await text(page, '#state') });
  await page.close();
}

main().then(
  () => console.log(JSON.stringify({ ok: true })),
  (error) => {
    console.log(JSON.stringify({ ok: false, error: error.message }));
    process.exitCode = 1;
  },
);
