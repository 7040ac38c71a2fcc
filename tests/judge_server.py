"""A fake OpenAI-compatible judge: a real HTTP server on 127.0.0.1 with switchable faults.

``JudgeServer().start()`` serves ``POST /v1/chat/completions``. ``behaviour`` picks the reply:

* ``good``: a well-formed dict (``{'pred': 'yes', 'score': 4}`` when the predicted answer
  contains the correct answer, else ``no``/1; score-only prompts get ``{'score': 3}``);
* ``malformed``: the protocol's own ``{''score': 4.8}`` for score prompts, prose around a dict
  with ``'pred': 'YES'`` for open-ended ones;
* ``garbage``: text with no verdict at all (unparsable);
* ``429``: HTTP 429 with ``Retry-After: <retry_after>``; ``500``: HTTP 500;
* ``401``, ``404`` (the model is retired), ``400model`` (a 400 naming the model parameter),
  ``400item`` (a 400 about one request's messages): OpenAI-shaped error bodies;
* ``hang``: sleeps ``hang_s`` before answering (past the client timeout);
* ``close``: closes the connection without a response.

``behaviour`` may also be a callable ``(request_number) -> name`` to script sequences (e.g.
fail twice then succeed). Every request is recorded (``requests``: time, body, headers), so
tests can assert that nothing was asked twice and what Authorization was sent.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 drops connections at concurrency 16
    daemon_threads = True


class JudgeServer:
    def __init__(self, behaviour: str | Callable[[int], str] = "good", delay_s: float = 0.0,
                 retry_after: str = "0.05", hang_s: float = 5.0):
        self.behaviour, self.delay_s, self.retry_after, self.hang_s = behaviour, delay_s, retry_after, hang_s
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "JudgeServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms delayed-ACK stalls

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append({"t": time.monotonic(), "path": self.path, "body": body,
                                            "authorization": self.headers.get("Authorization")})
                server._respond(self, body, n)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "JudgeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def user_messages(self) -> list[str]:
        """The user message of every request received, in arrival order."""
        with self._lock:
            return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def _respond(self, h: BaseHTTPRequestHandler, body: dict[str, Any], n: int) -> None:
        mode = self.behaviour(n) if callable(self.behaviour) else self.behaviour
        if self.delay_s:
            time.sleep(self.delay_s)
        if mode == "close":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode in ERRORS:
            payload = json.dumps({"error": ERRORS[mode]}).encode()
            h.send_response(int(mode[:3]))
            if mode == "429":
                h.send_header("Retry-After", self.retry_after)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        content = _reply_text(body["messages"][-1]["content"], mode)
        payload = json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        }).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)


ERRORS = {
    "429": {"message": "fake 429", "type": "fake"},
    "500": {"message": "fake 500", "type": "fake"},
    "401": {"message": "Incorrect API key provided: sk-test***cdef.", "type": "invalid_request_error",
            "param": None, "code": "invalid_api_key"},
    "404": {"message": "The model `gpt-3.5-turbo-0125` has been deprecated, learn more here: "
                       "https://example.invalid/deprecations", "type": "invalid_request_error", "param": None,
            "code": "model_not_found"},
    "400model": {"message": "Unsupported value: 'temperature' does not support 1 with this model.",
                 "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"},
    "400item": {"message": "This model's maximum context length is 16385 tokens. However, your messages "
                           "resulted in 20000 tokens.", "type": "invalid_request_error", "param": "messages",
                "code": "context_length_exceeded"},
}


def _reply_text(user: str, mode: str) -> str:
    if mode == "garbage":
        return "I cannot evaluate this."
    open_ended = "'pred'" in user
    if not open_ended:
        return "{''score': 4.8}" if mode == "malformed" else "{'score': 3}"
    ans = re.search(r"Correct Answer: (.*)\n", user).group(1).strip().lower()
    pred = re.search(r"Predicted Answer: (.*)\n", user).group(1).strip().lower()
    yes = bool(ans) and ans in pred
    if mode == "malformed":
        return f"Sure! Here is my evaluation: {{'pred': '{'YES' if yes else 'NO'}', 'score': {4.8 if yes else 1.2}}}"
    return repr({"pred": "yes" if yes else "no", "score": 4 if yes else 1})
