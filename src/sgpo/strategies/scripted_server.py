"""A scripted OpenAI-compatible chat server on loopback, for tests, benchmarks and dry runs.

It replays chosen behaviours per item, so every failure mode of a real endpoint can be produced on
demand: a script maps a *marker* (any text that occurs in the request's messages, e.g. an item's
problem text; the longest marker that occurs wins) to the list of actions for its successive
requests (the last one repeats):

    Reply(content, delay=0, finish_reason="stop")    a chat completion with that text
    Fail(status, headers={}, message=..., delay=0)    an HTTP error (429 with Retry-After, 500, ...)
    Drop(delay=0)                                     close the connection without answering

Requests that match no marker get `default` (a valid strategy JSON unless set). `latency` is added
to every request. `reject_response_formats` makes the server answer 400 to requests that ask for one
of those `response_format` types, like an endpoint without structured output (a mapping type -> status
gives another status: {"json_schema": 500} is a vLLM server whose xgrammar backend fails on the schema).

Run standalone (used by `benchmarks/extract_throughput.py`):

    python -m sgpo.strategies.scripted_server --port 8000 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_STRATEGY_JSON = json.dumps(
    {
        "approach": "Reduce the problem to a standard identity and apply it.",
        "key_insight": "The quantity asked for is invariant under the given transformation.",
        "steps": ["Name the unknown quantity.", "Rewrite the condition with the identity.", "Solve and check."],
        "pitfalls": ["Forgetting the domain restriction."],
    }
)


@dataclass(frozen=True)
class Reply:
    content: str
    delay: float = 0.0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Fail:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    message: str = "scripted failure"
    delay: float = 0.0


@dataclass(frozen=True)
class Drop:
    delay: float = 0.0


Action = Reply | Fail | Drop


@dataclass
class RecordedRequest:
    marker: str | None
    attempt: int
    body: dict[str, Any]
    authorization: str | None
    time: float


class ScriptedServer:
    """`with ScriptedServer(script) as srv: ... srv.base_url ...` (a thread on 127.0.0.1, free port)."""

    def __init__(
        self,
        script: Mapping[str, Sequence[Action]] | None = None,
        *,
        default: Action | Callable[[dict[str, Any]], Action] = Reply(DEFAULT_STRATEGY_JSON),
        latency: float = 0.0,
        reject_response_formats: Iterable[str] | Mapping[str, int] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        for marker, actions in self.script.items():
            if not actions:
                raise ValueError(f"no actions for marker {marker!r}")
        self.default = default
        self.latency = latency
        rejects = reject_response_formats
        self.reject_response_formats = dict(rejects) if isinstance(rejects, Mapping) else dict.fromkeys(rejects, 400)
        self.requests: list[RecordedRequest] = []
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, marker: str | None = None) -> int:
        """Requests received (for one marker, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if marker is None or r.marker == marker)

    # -- behaviour ---------------------------------------------------------------------------------
    def _choose(self, body: dict[str, Any], authorization: str | None) -> Action:
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
        marker = max((m for m in self.script if m in text), key=len, default=None)  # the longest that occurs
        with self._lock:
            attempt = self._attempts.get(marker or "", 0)
            self._attempts[marker or ""] = attempt + 1
            self.requests.append(RecordedRequest(marker, attempt, body, authorization, time.time()))
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in self.reject_response_formats:
            status = self.reject_response_formats[fmt["type"]]
            what = "is not supported by this server" if status < 500 else "failed in the structured-output backend"
            return Fail(status, message=f"response_format {fmt.get('type')!r} {what}")
        if marker is not None:
            actions = self.script[marker]
            return actions[min(attempt, len(actions) - 1)]
        return self.default(body) if callable(self.default) else self.default

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send_json(self, status: int, payload: dict[str, Any], headers: Mapping[str, str] = {}) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send_json(200 if self.path.endswith("/health") else 404, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send_json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                action = server._choose(body, self.headers.get("Authorization"))
                try:
                    time.sleep(server.latency + action.delay)
                    if isinstance(action, Drop):
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if isinstance(action, Fail):
                        kind = "rate_limit_error" if action.status == 429 else "server_error"
                        self._send_json(action.status, {"error": {"message": action.message, "type": kind}}, action.headers)
                        return
                    self._send_json(
                        200,
                        {
                            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", "scripted"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": action.content},
                                    "finish_reason": action.finish_reason,
                                }
                            ],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                        },
                    )
                except (BrokenPipeError, ConnectionResetError, OSError):
                    # the client gave up (timeout) before we answered
                    self.close_connection = True

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a scripted OpenAI-compatible server that always returns one valid strategy")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free port, printed on start)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request (default: 0)")
    args = parser.parse_args(argv)
    srv = ScriptedServer(latency=args.latency, host=args.host, port=args.port)
    print(f"READY {srv.port}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
