"""A fake OpenAI-compatible server on 127.0.0.1 (real HTTP, a thread of the test): /v1/chat/completions answers
every request with a text naming the model, the seed and the last user message, and records what it was sent.
``fail_after`` makes it answer 500 once that many requests have succeeded, until ``fail_after`` is set to None."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEndpoint:
    def __init__(self) -> None:
        self.requests: list[dict] = []  # bodies of the requests answered, in order
        self.failures = 0
        self.headers: list[dict[str, str]] = []
        self.fail_after: int | None = None
        self.status = 500  # what a failing request gets
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @staticmethod
    def answer(body: dict) -> str:
        last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        return f"{body['model']} (seed {body.get('seed')}) on: {last}"

    def _reply(self, body: dict, authorization: str | None) -> tuple[int, dict]:
        with self.lock:
            self.headers.append({"authorization": authorization})
            if self.fail_after is not None and len(self.requests) >= self.fail_after:
                self.failures += 1
                return self.status, {"error": {"message": "the fake endpoint is down", "type": "server_error"}}
            self.requests.append(body)
        message = {"role": "assistant", "content": self.answer(body)}
        return 200, {"id": f"cmpl-{len(self.requests)}", "object": "chat.completion", "created": 0,
                     "model": body["model"] + "-served", "choices": [{"index": 0, "message": message,
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                     "total_tokens": 2}}  # fmt: skip

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = endpoint._reply(body, self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "5")  # the client's backoff honours it: retries stay quick
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
