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
    """The same request to the real server at ``target`` (its /v1 URL); a streamed answer comes back whole."""
    root = target[: -len("/v1")]
    url = root + path
    response = httpx.get(url, timeout=600) if body is None else httpx.post(url, json=body, timeout=600)
    if body is not None and body.get("stream"):
        return response.status_code, response.text  # its server-sent events, as they came
    return response.status_code, response.json()


def with_template_report(target: str, server: str, template: str | None, paths: list[str] | None = None) -> Handler:
    """A proxy in front of a real llama-cpp-python server that reports its chat template as ``server`` does.

    ``llama-server``: /props with ``chat_template`` (llama.cpp's ChatML fallback when the model has none)
    and the context; ``ollama``: /api/show with ``template`` (``{{ .Prompt }}`` when it has none);
    ``vllm``: /tokenize of messages answers tokens, or refuses a model without a template with vLLM's 400.
    ``template`` None: the model has none. The real server answers everything else; ``paths`` collects
    the paths asked.
    """

    def handle(request: Any, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        if paths is not None:
            paths.append(path)
        if server == "llama-server" and path == "/props":
            shown = LLAMA_SERVER_CHATML_FALLBACK if template is None else template
            return 200, {"chat_template": shown, "default_generation_settings": {"n_ctx": 2048}, "total_slots": 1}
        if server == "ollama" and path == "/api/show":
            return 200, {"template": OLLAMA_DEFAULT_TEMPLATE if template is None else template, "parameters": ""}
        if server == "vllm" and path == "/tokenize" and body is not None and "messages" in body:
            if template is None:
                return 400, {"object": "error", "message": VLLM_NO_TEMPLATE, "type": "BadRequestError", "code": 400}
            status, data = forward(target, "/extras/tokenize", {"input": body["messages"][0]["content"]})
            return status, {"count": len(data["tokens"]), "max_model_len": 2048, "tokens": data["tokens"]}
        if path in ("/props", "/api/show", "/tokenize"):
            return 404, {"detail": "Not Found"}
        return forward(target, path, body)

    return handle


# What llama-server reports and uses for a model without a chat template: CHATML_TEMPLATE_SRC in llama.cpp's
# common/chat.cpp, written out here as llama-server sends it.
LLAMA_SERVER_CHATML_FALLBACK = r"""{%- for message in messages -%}
  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}"""
# Ollama's template for a model without one (template/template.go: DefaultTemplate)
OLLAMA_DEFAULT_TEMPLATE = "{{ .Prompt }}"
# vLLM 0.x's answer to a chat request for a model whose tokenizer has no chat template
VLLM_NO_TEMPLATE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat template if "
    "the tokenizer does not define one."
)


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
