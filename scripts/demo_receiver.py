#!/usr/bin/env python3
"""The demo's webhook receiver: what an email tool or a shop would run.

  demo_receiver.py PORT SECRET LOG PIDFILE

Listens on 127.0.0.1:PORT, verifies each request's Standard Webhooks
signature (webhook-id, webhook-timestamp, webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">, the whsec_ secret base64-decoded) and
appends one JSON line per request to LOG: when, the webhook id, whether the
signature verified, and the messages.  Answers 200 when it verified, 401
otherwise.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, SECRET, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
KEY = base64.b64decode(SECRET[len("whsec_"):]) if SECRET.startswith("whsec_") else SECRET.encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        wid, ts = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
        mac = hmac.new(KEY, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        verified = expected in self.headers.get("webhook-signature", "").split(" ")
        try:
            messages = json.loads(body)["messages"]
        except (ValueError, KeyError):
            messages = []
        with open(LOG, "a") as f:
            f.write(json.dumps({"at": time.time(), "webhook_id": wid, "verified": verified,
                                "messages": messages}) + "\n")
        self.send_response(200 if verified else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", PORT), Handler)
with open(sys.argv[4], "w") as f:
    f.write(str(os.getpid()))
server.serve_forever()
