// A Sluice client with the `ws` package: subscribes to one key, prints the replyId the
// gateway gives this connection, prints every record, acknowledges each one with a message
// back (it reaches the gateway's `output` topic and event feed), and reconnects with
// backoff when the gateway closes the connection for a reason worth coming back from.
//
//   SLUICE_PASSWORD=… node client.js
//
// Settings (environment):
//   SLUICE_URL          gateway address (default ws://127.0.0.1:8080)
//   SLUICE_KEY          message key to subscribe to, or * for every record (default sensor-1)
//   SLUICE_USER         Basic-auth user (default sluice, the user `sluice --demo` generates)
//   SLUICE_PASSWORD     Basic-auth password (`sluice --demo` prints one at start-up)
//   SLUICE_TOKEN        a client token instead of user and password (sent as Bearer)
//   SLUICE_MAX_RECORDS  exit after this many records (default: run until interrupted)

import WebSocket from 'ws';

const url = (process.env.SLUICE_URL || 'ws://127.0.0.1:8080').replace(/\/+$/, '');
const key = process.env.SLUICE_KEY || 'sensor-1';
const user = process.env.SLUICE_USER || 'sluice';
const password = process.env.SLUICE_PASSWORD;
const token = process.env.SLUICE_TOKEN;
const maxRecords = Number(process.env.SLUICE_MAX_RECORDS || 0);

if (!password && !token) {
  console.error('error: set SLUICE_PASSWORD (`sluice --demo` prints one) or SLUICE_TOKEN');
  process.exit(2);
}
if (!Number.isInteger(maxRecords) || maxRecords < 0) {
  console.error('error: SLUICE_MAX_RECORDS must be a whole number');
  process.exit(2);
}

// The key is one path segment, so `/` and spaces in it must be escaped; `*` stays as is
// because it means "every record".
const target = `${url}/${encodeURIComponent(key)}`;
const authorization = token
  ? `Bearer ${token}`
  : `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

// Close codes after which reconnecting makes sense. Any other code was meant (1000 or a
// 4000-4999 code from an operator) or points at a bug in this client (1002, 1007, 1009),
// and coming back would only repeat it.
const RECONNECT_AFTER = new Map([
  [1001, 'the gateway is shutting down or restarting'],
  [1006, 'the connection was lost'],
  [1008, 'this client fell behind (slow consumer); records sent meanwhile were missed'],
  [1011, 'the gateway hit an unexpected error'],
  [1012, 'the gateway is restarting'],
  [1013, 'the gateway is overloaded, try again later'],
]);

// Refusals of the upgrade request that no retry will fix, with what to check.
const REFUSED = new Map([
  [400, 'the gateway refused the request: check SLUICE_URL and SLUICE_KEY'],
  [401, 'the gateway refused the credentials: check SLUICE_USER and SLUICE_PASSWORD, or SLUICE_TOKEN (expired?)'],
  [403, `these credentials may not read key "${key}" (a token lists the keys it opens)`],
]);

let received = 0;
let attempt = 0; // failed attempts since the last connection that opened
let stopping = false;
let socket = null;
let retryTimer = null;

function connect() {
  console.log(`connecting to ${target}`);
  // The User-Agent shows in the gateway's client list (GET /api/clients, the console).
  socket = new WebSocket(target, {
    headers: { Authorization: authorization, 'User-Agent': 'sluice-example-node-ws' },
  });
  let opened = false;
  let welcomed = false;
  let refusedWith = null;
  let failure = null;

  // An answer other than 101: ws hands it to this listener when there is one, and the
  // handshake must then be ended here.
  socket.on('unexpected-response', (request, response) => {
    refusedWith = response.statusCode;
    socket.terminate();
  });
  socket.on('error', (error) => {
    failure = error.message;
  });

  socket.on('open', () => {
    opened = true;
    attempt = 0; // a connection that opened resets the backoff
  });

  socket.on('message', (data, isBinary) => {
    // The first frame names this connection: {"type":"connected","replyId":"…"}. The
    // replyId is how the gateway, its admin API and its `output` topic know this client.
    // (Gateways started with --no-welcome send records only.)
    if (!welcomed) {
      welcomed = true;
      const welcome = isBinary ? null : parseJson(data.toString());
      if (welcome?.type === 'connected') {
        console.log(`connected replyId=${welcome.replyId}`);
        return;
      }
    }
    if (stopping) return;

    // A record's value, verbatim: text when it is UTF-8, binary otherwise.
    received += 1;
    console.log(isBinary ? `record (binary) ${data.toString('base64')}` : `record ${data.toString()}`);

    // A message back to the gateway: it shows as this client's lastMessageIn and on the
    // event feed, and goes to the `output` topic (keyed by the replyId) when there is one.
    const ack = JSON.stringify({ ack: received });
    socket.send(ack);
    console.log(`sent ${ack}`);

    if (maxRecords && received >= maxRecords) {
      stopping = true;
      socket.close(1000, 'done');
    }
  });

  socket.on('close', (code, reason) => {
    socket = null;
    if (stopping) {
      console.log(`done after ${received} records`);
      return;
    }
    if (refusedWith !== null) {
      const why = REFUSED.get(refusedWith);
      if (why) {
        console.error(`error: HTTP ${refusedWith}: ${why}`);
        process.exitCode = 1;
        return;
      }
      // 503 is the gateway at its connection limit; other statuses, a proxy in the way.
      console.log(`refused: HTTP ${refusedWith}`);
      return reconnect();
    }
    if (!opened) {
      console.log(`cannot connect: ${failure ?? `closed with ${code}`}`);
      return reconnect();
    }
    console.log(`closed code=${code} reason=${reason.toString()}`);
    const why = RECONNECT_AFTER.get(code);
    if (why) {
      console.log(why);
      return reconnect();
    }
    console.log('not reconnecting');
    process.exitCode = code === 1000 ? 0 : 1;
  });
}

// Exponential backoff with jitter, from half a second up to 30 s: a gateway that restarts
// is not met by every client at the same instant.
function reconnect() {
  const ceiling = Math.min(30_000, 500 * 2 ** attempt);
  attempt += 1;
  const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  console.log(`reconnecting in ${delay} ms`);
  retryTimer = setTimeout(connect, delay);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// Ctrl-C: say goodbye with a normal close rather than dropping the connection.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopping = true;
    clearTimeout(retryTimer);
    if (socket?.readyState === WebSocket.OPEN) socket.close(1000, 'client stopped');
    else process.exit(0);
  });
}

connect();
