"""A backend for Sluice over HTTP, with nothing but Python's standard library.

- POST /connect: Sluice's connect proxy (--connect-url) asks who may connect. Tokens are
  looked up in TOKENS below; a real backend would check a session cookie or its own tokens.
- POST /events: Sluice's event webhook (--events-url). The signature is checked over the
  raw body; each "ping" message is answered with a reply to the client that sent it.

    SLUICE_WEBHOOK_SECRET='a webhook secret of 32 bytes!!' python3 backend.py 8090
    sluice --connect-url http://127.0.0.1:8090/connect \
           --events-url http://127.0.0.1:8090/events --demo
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["SLUICE_WEBHOOK_SECRET"].encode()
# Signatures older than this are refused: a captured request cannot be replayed later.
MAX_AGE_SECONDS = 300

# token -> what its holder may do
TOKENS = {
    "demo-token": {"user": "demo", "keys": ["sensor-*"], "data": {"plan": "trial"}},
}


def signature_ok(header, body):
    """Sluice-Signature: t=UNIX_SECONDS,v1=HEX(HMAC-SHA256(secret, "t." + body))"""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > MAX_AGE_SECONDS:
        return False
    expected = hmac.new(SECRET, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/connect":
            request = json.loads(body)
            grant = TOKENS.get(request.get("token") or "")
            if grant is None:
                return self.answer(200, {"allow": False, "status": 401, "error": "unknown token"})
            print(f"connect {grant['user']} from {request['remoteAddr']} to {request['path']}", flush=True)
            return self.answer(200, {"allow": True, **grant})
        if self.path == "/events":
            if not signature_ok(self.headers.get("Sluice-Signature", ""), body):
                return self.answer(401, {"error": "bad signature"})
            answers = []
            for event in json.loads(body):
                print(f"event {event['type']} {event['replyId']} {event.get('data', '')}", flush=True)
                if event["type"] == "message" and event.get("data") == "ping":
                    answers.append({"reply": "pong"})
                else:
                    answers.append(None)
            return self.answer(200, answers)
        self.answer(404, {"error": "no such endpoint"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8090
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"backend listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()
