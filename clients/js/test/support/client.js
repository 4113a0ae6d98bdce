// Clients of the library under test, connected to a test gateway.

import WebSocket from 'ws';

import { Sluice } from '../../index.js';
import { BASIC } from './gateway.js';
import { nextEvent } from './wait.js';

// Reconnects within tens of milliseconds: the tests wait on events, not on the clock.
export const FAST = { initialDelay: 20, maxDelay: 200 };

/**
 * A client of `gateway` with Basic credentials (unless `options` says otherwise), once its
 * connection is up; closed when the test `t` ends.
 */
export async function connect(t, gateway, options = {}) {
  const sluice = new Sluice(gateway.url, {
    WebSocket,
    headers: options.token ? undefined : { Authorization: BASIC },
    reconnect: FAST,
    ...options,
  });
  t.after(() => sluice.close());
  await nextEvent(sluice, 'connected');
  return sluice;
}
