"""Real HTTP servers on 127.0.0.1 that speak the OpenAI and Anthropic wire formats, scripted per test."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Scripted:
    """One response the server will send: status, JSON body (or raw text) and extra headers."""

    status: int
    body: dict | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict


class ScriptedServer:
    """Answers each POST with the next scripted response and records every request; use as a context manager."""

    def __init__(self, responses: list[Scripted]):
        self.responses = list(responses)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _next(self, recorded: Recorded) -> Scripted:
        with self._lock:
            self.requests.append(recorded)
            if not self.responses:
                # 418: not retried by the clients, so a test that asks too often fails at once.
                return Scripted(418, {"error": {"message": "the test script has no more responses"}})
            return self.responses.pop(0)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else {}
                reply = server._next(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler


def openai_reply(text: str, prompt_tokens: int = 100, completion_tokens: int = 20, finish: str = "stop") -> Scripted:
    """A chat.completion as OpenAI sends it."""
    return Scripted(200, {
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def anthropic_reply(text: str, input_tokens: int = 100, output_tokens: int = 20, stop: str = "end_turn") -> Scripted:
    """A message as Anthropic's Messages API sends it."""
    return Scripted(200, {
        "id": "msg_test", "type": "message", "role": "assistant", "model": "test-model",
        "content": [{"type": "text", "text": text}], "stop_reason": stop,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Scripted:
    return Scripted(status, {"error": {"type": "error", "message": message}}, headers or {})
