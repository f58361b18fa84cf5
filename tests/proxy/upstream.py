"""A stand-in upstream API for the tool-proxy tests (the standard library's HTTP server).

Prints its port on the first line, then answers every request with a JSON echo of what it
received (method, path, query, headers but its own credentials, body length) and appends the same to --log, one JSON
object per line, so a test can assert what reached the upstream. `/v2/redirect` answers 302
to another host; `/v2/big` streams --big bytes; `/v2/reflect` quotes the key it got (header
and body), as a careless upstream's error page would.

usage: upstream.py --log FILE [--big N]
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

args = argparse.ArgumentParser()
args.add_argument("--log", required=True)
args.add_argument("--big", type=int, default=1 << 20)
opts = args.parse_args()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        u = urlsplit(self.path)
        seen = {"method": self.command, "path": u.path, "query": u.query,
                "headers": {k.lower(): v for k, v in self.headers.items()}, "body_bytes": len(body)}
        with open(opts.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(seen) + "\n")
        if u.path == "/v2/redirect":
            self.send_response(302)
            self.send_header("Location", "http://evil.example/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if u.path == "/v2/reflect":
            # A careless upstream: its error page quotes the key it was called with.
            out = ("error: key " + self.headers.get("X-Api-Key", "") + " is rate-limited").encode()
            self.send_response(429)
            self.send_header("X-Debug-Key", self.headers.get("X-Api-Key", ""))
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if u.path == "/v2/big":
            self.send_response(200)
            self.send_header("Content-Length", str(opts.big))
            self.end_headers()
            chunk = b"x" * 65536
            left = opts.big
            while left > 0:
                n = min(left, len(chunk))
                self.wfile.write(chunk[:n])
                left -= n
            return
        # Like a real API, it never reflects the credentials it was called with.
        reply = dict(seen, headers={k: v for k, v in seen["headers"].items()
                                    if k not in ("x-api-key", "authorization")})
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Set-Cookie", "upstream_session=1")
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
print(server.server_address[1], flush=True)
server.serve_forever()
