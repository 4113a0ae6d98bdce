// Drives the EventSource example (examples/eventsource/index.html) in headless Chromium: the
// browser's own EventSource, across origins, through a disconnect made by the gateway, must
// show every record exactly once (it resumes with Last-Event-ID). Run by tests/examples.rs.
//
// Input (environment): PAGE_URL (with ?url=&key=&token=), GATEWAY_HTTP, ADMIN_TOKEN, KEY,
// CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional).
// Output: one JSON line per step, the last {"ok":true} or {"ok":false,"error":…}.

import { withBrowser } from './chromium.mjs';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const say = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));

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
  await withBrowser('eventsource', {}, async (context) => {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(env('PAGE_URL'));
      await page.locator('#state').filter({ hasText: 'connected as' }).waitFor({ timeout: 15000 });
      const first = (await page.locator('#state').textContent()).match(/connected as (\S+)/)[1];
      say('connected', { replyId: first });

      for (let i = 0; i < 5; i++) await publish(`r${i}`);
      await page.waitForFunction(() => document.getElementById('out').textContent.includes('r4'), null, { timeout: 15000 });
      say('records shown');

      // The gateway ends the stream; records published before the browser comes back must
      // still reach it, once.
      await admin('DELETE', `/api/clients/${first}?code=4000&reason=${encodeURIComponent('come back')}`);
      for (let i = 5; i < 10; i++) await publish(`r${i}`);
      await page.locator('#state').filter({ hasText: 'resumed: true' }).waitFor({ timeout: 20000 });
      const second = (await page.locator('#state').textContent()).match(/connected as (\S+)/)[1];
      if (second === first) throw new Error('the page did not reconnect');
      say('resumed', { replyId: second });

      await page.waitForFunction(() => document.getElementById('out').textContent.includes('r9'), null, { timeout: 15000 });
      const shown = (await page.locator('#out').textContent()).split('\n').filter((l) => l.length > 0).reverse();
      const expected = Array.from({ length: 10 }, (_, i) => `r${i}`);
      if (JSON.stringify(shown) !== JSON.stringify(expected)) {
        throw new Error(`the page shows ${JSON.stringify(shown)}, not ${JSON.stringify(expected)}`);
      }
      say('every record once, in order', { shown });
      if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
      if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
      console.log(JSON.stringify({ ok: true }));
  });
}

main().catch((e) => {
  console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) }));
  process.exit(1);
});
