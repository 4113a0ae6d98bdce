// The real `sluice` binary for the tests: started on 127.0.0.1 with a port of its own choice
// (read from the line it prints), driven through its admin API, stopped after the test.
//
// SLUICE_TEST_BIN names the binary (tests/clientlib.rs passes the one cargo built); by
// default target/debug/sluice of this repository.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { within } from './wait.js';

export const ADMIN_TOKEN = 'admin-token-for-the-client-tests-0123';
export const USER = 'tester';
// A colon and a space, as RFC 7617 allows.
export const PASSWORD = 's3cret: with space';
export const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

export const BINARY =
  process.env.SLUICE_TEST_BIN || fileURLToPath(new URL('../../../../target/debug/sluice', import.meta.url));

/** Keys of their own for each test: several tests share a gateway. */
export function unique(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Starts the gateway with Basic credentials USER / PASSWORD and ADMIN_TOKEN (plus `args`),
 * and waits until it listens. Its environment is only what is given here: nothing leaks in
 * from whoever runs the tests.
 */
export async function startGateway(args = []) {
  const child = spawn(BINARY, ['--host', '127.0.0.1', '--port', '0', ...args], {
    env: { PATH: process.env.PATH, RUST_LOG: 'info', WS_USERNAME: USER, WS_PASSWORD: PASSWORD, ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  createInterface({ input: child.stderr }).on('line', (line) => log.push(line));
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    // "sluice listening on ws://127.0.0.1:PORT (subscribe at …)"
    lines.on('line', (line) => {
      const match = /^sluice listening on ws:\/\/(\S+)/.exec(line);
      if (match) resolve(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`sluice exited (${code}) before listening:\n${log.join('\n')}`)));
    child.once('error', reject);
  });
  const hostport = await within(30_000, listening, () => {
    child.kill();
    return `sluice did not listen within 30 s:\n${log.join('\n')}`;
  });
  return new Gateway(child, hostport, log);
}

class Gateway {
  constructor(child, hostport, log) {
    this.child = child;
    this.url = `ws://${hostport}/`;
    this.http = `http://${hostport}`;
    this.logLines = log;
  }

  /** The gateway's log, for failure messages. */
  log() {
    return this.logLines.slice(-40).join('\n');
  }

  /** An admin API call; the status and the body (JSON when it is JSON). */
  async api(method, path, body) {
    const response = await fetch(`${this.http}${path}`, {
      method,
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
      body,
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, body: json };
  }

  async #expect(method, path, body, status) {
    const answer = await this.api(method, path, body);
    if (answer.status !== status) {
      throw new Error(`${method} ${path} answered ${answer.status}, not ${status}: ${JSON.stringify(answer.body)}`);
    }
    return answer.body;
  }

  /** Puts a record on the embedded stream (a string, or bytes for a binary value). */
  publish(key, value) {
    return this.#expect('POST', `/api/publish/${encodeURIComponent(key)}`, value, 202);
  }

  /** Publishes each value under `key`, one after another (so in this order). */
  async publishAll(key, values) {
    for (const value of values) await this.publish(key, value);
  }

  /** A client token with these claims (`keys`, `topics`, `ttl`). */
  async mint(claims = {}) {
    const answer = await this.#expect('POST', '/api/tokens', JSON.stringify({ sub: 'client-tests', ...claims }), 201);
    return answer.token;
  }

  /** The client entry of this replyId. */
  client(replyId) {
    return this.#expect('GET', `/api/clients/${replyId}`, undefined, 200);
  }

  /** Closes that client's connection from the gateway's side. */
  drop(replyId, code = 1000, reason = 'dropped by the test') {
    return this.#expect('DELETE', `/api/clients/${replyId}?code=${code}&reason=${encodeURIComponent(reason)}`, undefined, 204);
  }

  /** Sends a message to that client through the admin API. */
  message(replyId, body) {
    return this.#expect('POST', `/api/clients/${replyId}/messages`, body, 202);
  }

  /**
   * The admin event feed (`GET /api/events`, Server-Sent Events) from now on: `find(pick)`
   * waits for the next event for which `pick` holds; `close()` ends the feed.
   */
  async events() {
    const response = await fetch(`${this.http}/api/events`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    if (response.status !== 200) throw new Error(`GET /api/events answered ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = '';
    const next = async () => {
      for (;;) {
        const end = pending.indexOf('\n');
        if (end >= 0) {
          const line = pending.slice(0, end).trimEnd();
          pending = pending.slice(end + 1);
          if (line.startsWith('data:')) return JSON.parse(line.slice(5));
          continue;
        }
        const { value, done } = await reader.read();
        if (done) throw new Error('the event feed ended');
        pending += value;
      }
    };
    return {
      find: async (pick, ms = 15_000) => {
        const found = (async () => {
          for (;;) {
            const event = await next();
            if (pick(event)) return event;
          }
        })();
        return within(ms, found, `no matching event within ${ms} ms`);
      },
      close: () => reader.cancel(),
    };
  }

  /** SIGTERM, and waits for the process to exit. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    await exited;
  }
}
