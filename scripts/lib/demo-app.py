#!/usr/bin/env python3
"""A stand-in for an organisation's app, for scripts/quickstart.sh: plain HTTP on 127.0.0.1.

It trusts the X-DeviceTrust-* headers that the proxy in front of it (nginx with auth_request)
sets from the CA's forward-auth answer, and shows them, as JSON, so that the quick start can
show who was let in. It does not verify X-DeviceTrust-Assertion (docs/relying-parties.md shows
how an app does that with a JOSE library); it only says whether one arrived.

    demo-app.py [--listen 127.0.0.1:0]

Prints one JSON line, {"url": "http://127.0.0.1:PORT"}, once it accepts connections, then
serves until it is sent SIGTERM or SIGINT. Standard library only.
"""

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SHOWN = [
    ("udid", "X-DeviceTrust-Device-Udid"),
    ("deviceSerial", "X-DeviceTrust-Device-Serial"),
    ("certificateSerial", "X-DeviceTrust-Certificate-Serial"),
    ("user", "X-DeviceTrust-User"),
]


class Handler(BaseHTTPRequestHandler):
    server_version = "devicetrust-demo-app"

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        body = {"app": "devicetrust demo app", "path": self.path}
        for key, header in SHOWN:
            body[key] = self.headers.get(header) or None
        body["assertion"] = "present (not verified here)" if self.headers.get("X-DeviceTrust-Assertion") else None
        data = (json.dumps(body, indent=2) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        sys.stderr.write("demo-app: %s\n" % (format % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT; port 0 picks a free one")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)

    def stop(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"url": "http://%s:%d" % server.server_address[:2]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
