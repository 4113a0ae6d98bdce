"""A Sluice client with the `websockets` package (asyncio).

Subscribes to one key, prints the replyId the gateway gives this connection, prints every
record, acknowledges each one with a message back (it reaches the gateway's `output` topic
and event feed), and reconnects with backoff when the gateway closes the connection for a
reason worth coming back from.

    SLUICE_PASSWORD=… python client.py

Settings (environment):
    SLUICE_URL          gateway address (default ws://127.0.0.1:8080)
    SLUICE_KEY          message key to subscribe to, or * for every record (default sensor-1)
    SLUICE_USER         Basic-auth user (default sluice, the user `sluice --demo` generates)
    SLUICE_PASSWORD     Basic-auth password (`sluice --demo` prints one at start-up)
    SLUICE_TOKEN        a client token instead of user and password (sent as Bearer)
    SLUICE_MAX_RECORDS  exit after this many records (default: run until interrupted)
"""

import asyncio
import base64
import json
import os
import random
import sys
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

# Close codes after which reconnecting makes sense. Any other code was meant (1000 or a
# 4000-4999 code from an operator) or points at a bug in this client (1002, 1007, 1009),
# and coming back would only repeat it.
RECONNECT_AFTER = {
    1001: "the gateway is shutting down or restarting",
    1006: "the connection was lost",
    1008: "this client fell behind (slow consumer); records sent meanwhile were missed",
    1011: "the gateway hit an unexpected error",
    1012: "the gateway is restarting",
    1013: "the gateway is overloaded, try again later",
}


def say(line):
    # Flushed at once, so that a pipe (a log collector, a test) sees each line as it happens.
    print(line, flush=True)


def settings():
    password = os.environ.get("SLUICE_PASSWORD")
    token = os.environ.get("SLUICE_TOKEN")
    if not password and not token:
        sys.exit("error: set SLUICE_PASSWORD (`sluice --demo` prints one) or SLUICE_TOKEN")
    try:
        max_records = int(os.environ.get("SLUICE_MAX_RECORDS") or 0)
    except ValueError:
        max_records = -1
    if max_records < 0:
        sys.exit("error: SLUICE_MAX_RECORDS must be a whole number")
    if token:
        authorization = f"Bearer {token}"
    else:
        user = os.environ.get("SLUICE_USER") or "sluice"
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    url = (os.environ.get("SLUICE_URL") or "ws://127.0.0.1:8080").rstrip("/")
    key = os.environ.get("SLUICE_KEY") or "sensor-1"
    # The key is one path segment, so `/` and spaces in it must be escaped; `*` stays as
    # is because it means "every record".
    return f"{url}/{quote(key, safe='*')}", key, authorization, max_records


# What to check when the gateway refuses the upgrade request; no retry would fix these.
def refusal(status, key):
    return {
        400: "the gateway refused the request: check SLUICE_URL and SLUICE_KEY",
        401: "the gateway refused the credentials: check SLUICE_USER and SLUICE_PASSWORD, "
        "or SLUICE_TOKEN (expired?)",
        403: f'these credentials may not read key "{key}" (a token lists the keys it opens)',
    }.get(status)


class Client:
    def __init__(self, target, key, authorization, max_records):
        self.target = target
        self.key = key
        self.authorization = authorization
        self.max_records = max_records
        self.received = 0  # across reconnects, for SLUICE_MAX_RECORDS

    async def run(self):
        """Connects, and reconnects while that makes sense; returns the exit code."""
        attempt = 0  # failed attempts since the last connection that opened
        while True:
            say(f"connecting to {self.target}")
            try:
                await self.session()
                return 0
            except InvalidStatus as refused:
                status = refused.response.status_code
                why = refusal(status, self.key)
                if why:
                    print(f"error: HTTP {status}: {why}", file=sys.stderr, flush=True)
                    return 1
                # 503 is the gateway at its connection limit; others, a proxy in the way.
                say(f"refused: HTTP {status}")
            except ConnectionClosed as closed:
                # No close frame received means the connection was lost: 1006.
                code = closed.rcvd.code if closed.rcvd else 1006
                reason = closed.rcvd.reason if closed.rcvd else ""
                say(f"closed code={code} reason={reason}")
                if code not in RECONNECT_AFTER:
                    say("not reconnecting")
                    return 0 if code == 1000 else 1
                say(RECONNECT_AFTER[code])
                attempt = 0  # this connection had opened: start the backoff afresh
            except (OSError, TimeoutError, InvalidHandshake) as error:
                say(f"cannot connect: {error}")

            # Exponential backoff with jitter, from half a second up to 30 s: a gateway
            # that restarts is not met by every client at the same instant.
            ceiling = min(30.0, 0.5 * 2**attempt)
            attempt += 1
            delay = ceiling / 2 + random.random() * ceiling / 2
            say(f"reconnecting in {round(delay * 1000)} ms")
            await asyncio.sleep(delay)

    async def session(self):
        """One connection; returns once SLUICE_MAX_RECORDS records have arrived, and
        raises ConnectionClosed when the gateway or the network ends it first."""
        headers = {"Authorization": self.authorization}
        async with connect(self.target, additional_headers=headers) as ws:
            try:
                # The first frame names this connection: {"type":"connected","replyId":…}.
                # The replyId is how the gateway, its admin API and its `output` topic
                # know this client. (Gateways started with --no-welcome send records only.)
                first = await ws.recv()
                welcome = parse_json(first) if isinstance(first, str) else None
                if isinstance(welcome, dict) and welcome.get("type") == "connected":
                    say(f"connected replyId={welcome['replyId']}")
                elif await self.on_record(ws, first):
                    return
                # recv() raises ConnectionClosed whatever the close code (iterating with
                # `async for` would end quietly on 1000 and 1001).
                while not await self.on_record(ws, await ws.recv()):
                    pass
            except asyncio.CancelledError:
                # Ctrl-C: a normal goodbye rather than the 1011 of leaving on an error.
                await ws.close(1000, "client stopped")
                raise

    async def on_record(self, ws, message):
        """Prints and acknowledges a record; True once the last wanted one is in."""
        # A record's value, verbatim: str when it is UTF-8, bytes otherwise.
        self.received += 1
        if isinstance(message, str):
            say(f"record {message}")
        else:
            say(f"record (binary) {base64.b64encode(message).decode()}")

        # A message back to the gateway: it shows as this client's lastMessageIn and
        # on the event feed, and goes to the `output` topic (keyed by the replyId) when
        # there is one.
        ack = json.dumps({"ack": self.received}, separators=(",", ":"))
        await ws.send(ack)
        say(f"sent {ack}")

        if self.max_records and self.received >= self.max_records:
            await ws.close(1000, "done")
            say(f"done after {self.received} records")
            return True
        return False


def parse_json(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(Client(*settings()).run()))
    except KeyboardInterrupt:
        sys.exit(130)
