"""A tiny HTTP server for the example's test 2: answers GET / with a fixed page."""

import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        body = b"<html><body><h1>hi!</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8005
    print(f"Starting httpd on port {port}...", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
