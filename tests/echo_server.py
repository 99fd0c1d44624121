"""A careless HTTP server on 127.0.0.1 for tests (stdlib only): every request, any method and path, is answered
with ``status`` and a JSON body (and an ``X-Error-Message`` header) that echo the request's Authorization
header, as misconfigured proxies and endpoints do. Used to show that no command prints a token it sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from waiting import patience


class EchoServer:
    def __init__(self, status: int = 401):
        self.status = status
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "EchoServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = patience(10)  # a stalled client, not a slow machine

            def _answer(self):
                server.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(min(length, 1 << 20))
                authorization = self.headers.get("Authorization")
                message = f"invalid credentials for {self.path}: Authorization: {authorization}"
                data = json.dumps({"error": message, "headers": dict(self.headers)}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        return Handler
