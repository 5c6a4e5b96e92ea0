#!/usr/bin/env python3
"""bench/dispatch's webhook receiver and raw-HTTP baseline client.

  dispatch_receiver.py serve PORT            answer every POST with 200 (HTTP/1.1, keep-alive)
  dispatch_receiver.py post PORT FILE N C    POST the body in FILE N times over C connections;
                                             print the seconds it took
"""
import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(port):
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def post(port, path, n, conns):
    body = open(path, "rb").read()
    headers = {"Content-Type": "application/json", "webhook-id": "msg_baseline",
               "webhook-timestamp": "0", "webhook-signature": "v1,x"}

    def worker(count):
        c = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(count):
            c.request("POST", "/hook", body, headers)
            c.getresponse().read()
        c.close()

    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(n // conns + (i < n % conns),)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{time.time() - t0:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        post(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
