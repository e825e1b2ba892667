"""Real HTTP servers for the tests: llama-cpp-python's OpenAI-compatible server, and small stand-ins.

The stand-ins (``FakeServer``) are plain ``http.server`` servers on 127.0.0.1 whose handler the
test chooses: a proxy in front of the real server that cuts prompts as Ollama does, one that
stops after a few answers, one that answers 500, one that is too slow, one that is no API.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` with one model, started and stopped by the test."""

    def __init__(self, model: Path, n_ctx: int = 2048, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # llama.cpp's log: a pipe would fill up and block the server; closed in stop()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", str(n_ctx),
                "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "2",
                # a request must not cut short another's stream (its default, made for one chat user)
                "--interrupt_requests", "false", *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("llama_cpp.server did not start within 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


Handler = Callable[[BaseHTTPRequestHandler, str, dict[str, Any] | None], tuple[int, Any]]


class FakeServer:
    """An HTTP server on 127.0.0.1 whose every request goes to ``handle(request, path, json_body)``.

    ``handle`` returns (status, body): a dict or list is sent as JSON, bytes or str as text/html.
    """

    def __init__(self, handle: Handler, port: int | None = None) -> None:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, body: dict[str, Any] | None) -> None:
                outer.requests += 1
                status, payload = handle(self, self.path, body)
                if isinstance(payload, dict | list):
                    data, kind = json.dumps(payload).encode(), "application/json"
                else:
                    data = payload.encode() if isinstance(payload, str) else payload
                    kind = "text/html"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(json.loads(self.rfile.read(length) or b"null"))

        self.requests = 0
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # a client gone away
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def forward(target: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    """The same request to the real server at ``target`` (its /v1 URL)."""
    root = target[: -len("/v1")]
    url = root + path
    response = httpx.get(url, timeout=600) if body is None else httpx.post(url, json=body, timeout=600)
    return response.status_code, response.json()


def vllm_shapes(target: str, *, content: str = "refused", fail_with: int | None = None,
                max_model_len: int | None = None) -> Handler:  # fmt: skip
    """A proxy in front of a real llama-cpp-python server whose own endpoints take vLLM's request shapes.

    As vLLM 0.32 answered them here: /tokenize takes ``model`` and ``prompt`` (and
    ``add_special_tokens``) and refuses llama-server's ``content`` with a 400 validation error
    (``content="ignored"``: answers it with no tokens instead, as a server that ignores a body it
    does not know would); /detokenize answers ``{"prompt": text}``; there is no /extras/; the model
    list gives ``max_model_len``. The tokens come from the real server behind it. ``fail_with``:
    /tokenize fails with that status instead.
    """

    def handle(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if path.startswith("/extras/"):
            return 404, {"detail": "Not Found"}
        if path == "/tokenize":
            if fail_with is not None:
                return fail_with, {"error": {"message": "engine dead"}}
            if body is None or "prompt" not in body:
                if content == "ignored":
                    return 200, {"tokens": []}
                return 400, {"error": {"message": "2 validation errors: body.prompt Field required"}}
            assert body.get("model") and body.get("add_special_tokens") is True, body
            status, data = forward(target, "/extras/tokenize", {"input": body["prompt"]})
            return status, {"count": len(data["tokens"]), "max_model_len": 2048, "tokens": data["tokens"]}
        if path == "/detokenize":
            assert body is not None and body.get("model"), body
            status, data = forward(target, "/extras/detokenize", {"tokens": body["tokens"]})
            return status, {"prompt": data["text"]}
        status, data = forward(target, path, body)
        if path == "/v1/models" and max_model_len is not None:
            data["data"][0]["max_model_len"] = max_model_len
        return status, data

    return handle
