// Compiled (never run) by types.test.js: the README's uses of the client, typed strictly
// against index.d.ts through the package's own name, as a TypeScript user imports it.

import { Sluice, SluiceError, backoff, type SluiceRecord, type Subscription } from '@sluice/client';

interface Reading {
  temp: number;
}

declare const WebSocketFromWs: new (url: string, protocols?: string | string[], options?: object) => unknown;

export async function dashboard(): Promise<void> {
  const sluice = new Sluice('wss://gateway.example/', {
    token: async () => 'a token',
    WebSocket: WebSocketFromWs,
    reconnect: { initialDelay: 250, maxDelay: 10_000 },
  });
  const stop: () => void = sluice.on('connected', ({ replyId }) => console.log(replyId.toUpperCase()));
  sluice.on('disconnected', ({ code, reason }) => console.log(code.toFixed(), reason.trim()));
  sluice.on('reconnecting', ({ attempt, delay }) => console.log(attempt + delay));
  sluice.on('subscribed', ({ id, cursor, resumed }) => console.log(id, cursor, resumed === false));
  sluice.on('message', (data) => console.log(typeof data === 'string' ? data : data.byteLength));
  sluice.on('error', (error: SluiceError) => console.log(error.status ?? 0, error.id ?? ''));
  stop();

  const sensors: Subscription<Reading> = await sluice.subscribe<Reading>(
    { pattern: 'sensor-*', where: { '/site': 'north' }, last: 10 },
    (record: SluiceRecord<Reading>) => console.log(record.key, record.value.temp, record.cursor),
  );
  console.log(sensors.id, sensors.cursor ?? 'none', sensors.confirmed);

  const pumps = await sluice.subscribe({ topic: 'pumps', keys: ['pump-1'], since: '15m' });
  for await (const record of pumps) {
    if (record.timestamp !== null && record.headers['region'] === 'eu') break;
  }
  await sensors.unsubscribe();
  const sent: boolean = sluice.send({ ack: 1 });
  const refreshed: boolean = await sluice.refresh();
  console.log(sent, refreshed, sluice.connected, sluice.replyId, backoff(3, { jitter: 0.2 }));
  await sluice.close();
}
