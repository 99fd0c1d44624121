"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 for tests (stdlib only).

    with JudgeServer(api_key="sk-test") as server:
        JudgeConfig(server.base_url, "judge-model", "sk-test")  # base_url ends in /v1

Every POST to ``.../chat/completions`` is answered with ``reply(prompt)`` (default
:func:`grade_by_containment`: "1.0" when the prediction of the table's last row contains the
ground truth, else "0.0"). The server records each request's JSON body and Authorization header
in ``requests``. ``fail_first`` makes the first N requests fail with ``fail_status``; a wrong key
gets a 401 whose body echoes the key it received, as careless servers do. It is bounded: bodies
over 1 MiB get 413 and requests beyond ``max_requests`` get 429.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from waiting import patience

MAX_BODY = 1 << 20


def grade_by_containment(prompt: str) -> str:
    """'1.0' if the last table row's prediction contains its ground truth (all <AND> parts, any <OR> part)."""
    row = next(line for line in reversed(prompt.splitlines()) if line.count(" | ") >= 3)
    _, truth, prediction = (cell.strip().lower() for cell in row.split(" | ")[:3])
    parts = [part.strip() for part in re.split(r"<and>|<or>", truth)]
    hits = [part in prediction for part in parts]
    return "1.0" if (any(hits) if "<or>" in truth else all(hits)) else "0.0"


class JudgeServer:
    def __init__(self, reply: Optional[Callable[[str], str]] = None, api_key: Optional[str] = None,
                 fail_first: int = 0, fail_status: int = 503, max_requests: int = 1000):
        self.reply = reply or grade_by_containment
        self.api_key = api_key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.max_requests = max_requests
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "JudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _answer(self, body: dict, authorization: Optional[str]) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"body": body, "authorization": authorization})
            count = len(self.requests)
        if count > self.max_requests:
            return 429, {"error": {"message": "request limit of the test server reached"}}
        if count <= self.fail_first:
            return self.fail_status, {"error": {"message": "temporarily unavailable"}}
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return 401, {"error": {"message": f"Incorrect API key provided: {authorization}"}}
        content = self.reply(body["messages"][-1]["content"])
        return 200, {
            "id": f"chatcmpl-{count}",
            "object": "chat.completion",
            "model": body.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = patience(10)  # a stalled client, not a slow machine

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                if not self.path.endswith("/chat/completions"):
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                elif length > MAX_BODY:
                    status, payload = 413, {"error": {"message": "request body too large"}}
                else:
                    body = json.loads(self.rfile.read(length))
                    status, payload = server._answer(body, self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler
