// Drives the example page (examples/browser/index.html) in headless Chromium, as someone
// following examples/README.md would use it. Run by tests/examples.rs, which starts the
// gateway, serves the page with `python3 -m http.server`, mints the token with
// `sluice token`, and afterwards checks on the gateway's event feed what the page did.
//
// Input (environment):
//   PAGE_URL          the page, with ?url=&key=&token= so that it connects at once
//   REFUSED_PAGE_URL  the same page from an origin the gateway does not allow
//   GATEWAY_HTTP      the gateway's HTTP address, for the admin API
//   ADMIN_TOKEN       the admin token
//   KEY               the key the page subscribes to
//   RECORDS           JSON array of record values to publish (the last ones after a reconnect)
//   MARKUP            a record value that is HTML: the page must show it as text
//   MESSAGE           what to send from the page's message form
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

const publish = (value) => admin('POST', `/api/publish/${encodeURIComponent(env('KEY'))}`, value);

async function main() {
  const records = JSON.parse(env('RECORDS'));
  const markup = env('MARKUP');
  const message = env('MESSAGE');
  await withBrowser('example-page', { viewport: { width: 1100, height: 800 } }, async (context) => {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    try {
      await run(page, { records, markup, message });
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

// Waits until the page lists a record equal to `value`.
const shown = (page, value) =>
  page.waitForFunction((v) => [...document.querySelectorAll('#records li')].some((li) => li.textContent === v), value);

// Waits until the page shows a replyId other than `previous`, and returns it.
async function replyId(page, previous) {
  await page.waitForFunction((p) => {
    const id = document.getElementById('reply-id').textContent;
    return id !== '-' && id !== p;
  }, previous);
  return text(page, '#reply-id');
}

async function run(page, { records, markup, message }) {
  await page.goto(env('PAGE_URL'));
  const first = await replyId(page, '-');
  say('connected', { replyId: first, state: await text(page, '#state') });

  // Records published now appear, in the DOM, as text.
  for (const value of [records[0], records[1], markup]) await publish(value);
  for (const value of [records[0], records[1], markup]) await shown(page, value);
  check((await page.evaluate(() => window.pwned)) === undefined, 'a record was run as markup');
  check((await page.locator('#records img').count()) === 0, 'a record was inserted as markup');

  // A message from the form reaches the gateway (tests/examples.rs checks the event feed).
  await page.fill('#message', message);
  await page.click('#send button');
  say('sent', { message });

  // The gateway going away (1001): the page shows the code and comes back by itself.
  await admin('DELETE', `/api/clients/${first}?code=1001&reason=${encodeURIComponent('shutting down')}`);
  await page.waitForFunction(() => document.getElementById('close').textContent === '1001 shutting down');
  const second = await replyId(page, first);
  say('reconnected', { replyId: second, close: await text(page, '#close') });
  for (const value of records.slice(2)) await publish(value);
  for (const value of records.slice(2)) await shown(page, value);

  // A close meant to last (an operator's 4001): shown, and no reconnect.
  await admin('DELETE', `/api/clients/${second}?code=4001&reason=${encodeURIComponent('bye from the test')}`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'closed by the gateway');
  const close = await text(page, '#close');
  check(close === '4001 bye from the test', `the page shows the close as ${JSON.stringify(close)}`);
  // A reconnect would come within the first backoff (at most 500 ms): give it three times that.
  await page.waitForTimeout(1500);
  const { clients } = await (await admin('GET', `/api/clients?key=${encodeURIComponent(env('KEY'))}`)).json();
  check(clients.length === 0, `the page came back after 4001: ${JSON.stringify(clients)}`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  const items = await page.locator('#records li').allTextContents();
  say('closed', { close, state: await text(page, '#state'), records: items, count: await text(page, '#count') });
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
  check((await text(page, '#reply-id')) === '-', 'the page from a refused origin was given a replyId');
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
