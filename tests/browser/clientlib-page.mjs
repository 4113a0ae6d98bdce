// The JavaScript client (clients/js/index.js) in headless Chromium, with the browser's own
// WebSocket and nothing else: a page served from its own origin (a small static server
// here) loads the library as an ES module, subscribes twice on one connection (a callback
// and `for await`), and rides out a drop by the gateway with both subscriptions resumed from
// their cursors. Run by tests/clientlib.rs, which checks the screenshot afterwards.
//
// Input (environment):
//   SLUICE_TEST_BIN  the gateway binary (default: target/debug/sluice of this repository)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//   SCREENSHOT       where to write a PNG of the page at the end (optional)
// Output: one JSON line per step on stdout, the last {"ok":true} or {"ok":false,"error":…};
// exit code 0 only when every check passed.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';

import { startGateway } from '../../clients/js/test/support/gateway.js';
import { withBrowser } from './chromium.mjs';

const LIBRARY = new URL('../../clients/js/index.js', import.meta.url);

const say = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// The page: it reads the gateway's address, a token and a key prefix from its query string.
// The token callback waits while `window.hold` is set, so that the test decides when the
// reconnect may happen.
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sluice client in the browser</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px system-ui, sans-serif; margin: 2rem; color: #1d2430; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1rem; margin-top: 1.5rem; }
  #status { padding: .5rem .8rem; background: #eef3f8; border-radius: 6px; }
  ol { font-family: ui-monospace, monospace; } li small { color: #6b7686; margin-left: 1rem; }
</style>
</head>
<body>
<h1>@sluice/client in a browser</h1>
<p id="status">state <b id="state">starting</b> · connection <code id="reply-id">-</code>
  · connections <span id="connections">0</span> · subscribed answers <span id="answers">0</span>
  · resumed <span id="resumed">-</span></p>
<h2>keys=[<span class="key"></span>-1], callback</h2><ol id="callback"></ol>
<h2>pattern <span class="key"></span>-*, for await</h2><ol id="iterated"></ol>
<script type="module">
  import { Sluice } from '/sluice/index.js';

  const params = new URLSearchParams(location.search);
  const prefix = params.get('prefix');
  for (const el of document.querySelectorAll('.key')) el.textContent = prefix;
  const $ = (id) => document.getElementById(id);
  const show = (list, record) => {
    const li = document.createElement('li');
    const value = document.createElement('span');
    value.className = 'value';
    value.textContent = record.value;
    const where = document.createElement('small');
    where.textContent = record.key + ' @ ' + record.offset;
    li.append(value, where);
    $(list).append(li);
  };

  const sluice = new Sluice(params.get('url'), {
    token: async () => {
      await window.hold;
      return params.get('token');
    },
    reconnect: { initialDelay: 50, maxDelay: 500 },
  });
  sluice.on('connected', ({ replyId }) => {
    $('state').textContent = 'connected';
    $('reply-id').textContent = replyId;
    $('connections').textContent = Number($('connections').textContent) + 1;
  });
  sluice.on('disconnected', ({ code }) => ($('state').textContent = 'disconnected ' + code));
  sluice.on('subscribed', ({ resumed }) => {
    $('answers').textContent = Number($('answers').textContent) + 1;
    if (resumed !== undefined) $('resumed').textContent = String(resumed);
  });
  sluice.on('error', (e) => console.error('sluice: ' + e.message));

  await sluice.subscribe({ keys: [prefix + '-1'] }, (record) => show('callback', record));
  const every = await sluice.subscribe({ pattern: prefix + '-*' });
  for await (const record of every) show('iterated', record);
</script>
</body>
</html>
`;

// Serves the page and the library, from an origin other than the gateway's.
async function serve() {
  const server = createServer((request, response) => {
    const path = new URL(request.url, 'http://page').pathname;
    if (path === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    } else if (path === '/sluice/index.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(LIBRARY));
    } else {
      response.writeHead(404).end();
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

const values = (page, list) => page.locator(`#${list} .value`).allTextContents();

// Waits until list `list` holds a record of value `last`, and returns its values.
async function through(page, list, last) {
  await page.waitForFunction(
    ([id, value]) => [...document.querySelectorAll(`#${id} .value`)].some((el) => el.textContent === value),
    [list, last],
  );
  return values(page, list);
}

const text = (page, selector) => page.locator(selector).textContent();

async function main() {
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  // The page's origin is not the gateway's: the gateway must be told to allow it.
  const gateway = await startGateway(['--allowed-origins', origin]);
  try {
    const prefix = `browser-${Math.random().toString(36).slice(2, 8)}`;
    const token = await gateway.mint({ keys: [`${prefix}-*`] });
    const url = new URL(origin);
    url.search = new URLSearchParams({ url: gateway.url, token, prefix }).toString();
    await withBrowser('clientlib', { viewport: { width: 900, height: 640 } }, async (context) => {
      const page = context.pages()[0] ?? (await context.newPage());
      page.setDefaultTimeout(15_000);
      const problems = [];
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
      try {
        await run(page, url.href, prefix, gateway);
        check(problems.length === 0, `the page reported errors: ${problems.join('; ')}`);
      } finally {
        if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT }).catch(() => {});
      }
    });
  } finally {
    await gateway.stop();
    server.close();
  }
}

async function run(page, url, prefix, gateway) {
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('answers').textContent === '2');
  const first = await text(page, '#reply-id');
  say('subscribed', { replyId: first });

  await gateway.publishAll(`${prefix}-1`, ['one', 'two']);
  await gateway.publish(`${prefix}-2`, 'three');
  check(
    JSON.stringify(await through(page, 'iterated', 'three')) === '["one","two","three"]',
    `iterated: ${await values(page, 'iterated')}`,
  );
  check(JSON.stringify(await through(page, 'callback', 'two')) === '["one","two"]', 'callback list');
  say('records shown', { callback: await values(page, 'callback'), iterated: await values(page, 'iterated') });

  // Dropped by the gateway; the reconnect waits (on the token callback) while records are
  // published, then both subscriptions must resume with nothing missed and nothing twice.
  await page.evaluate(() => {
    window.hold = new Promise((resolve) => {
      window.release = resolve;
    });
  });
  await gateway.drop(first);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'disconnected 1000');
  await gateway.publish(`${prefix}-1`, 'four');
  await gateway.publish(`${prefix}-2`, 'five');
  await page.evaluate(() => window.release());
  await page.waitForFunction(() => document.getElementById('connections').textContent === '2');
  const second = await text(page, '#reply-id');
  check(second !== first, 'the reconnect kept the old replyId');
  await gateway.publish(`${prefix}-1`, 'six');
  const callback = await through(page, 'callback', 'six');
  const iterated = await through(page, 'iterated', 'six');
  check(JSON.stringify(callback) === '["one","two","four","six"]', `callback after the drop: ${callback}`);
  check(
    JSON.stringify(iterated) === '["one","two","three","four","five","six"]',
    `iterated after the drop: ${iterated}`,
  );
  check((await text(page, '#resumed')) === 'true', 'the resume was not complete');
  say('resumed', { replyId: second, callback, iterated });
}

main().then(
  () => console.log(JSON.stringify({ ok: true })),
  (error) => {
    console.log(JSON.stringify({ ok: false, error: error.message }));
    process.exitCode = 1;
  },
);
