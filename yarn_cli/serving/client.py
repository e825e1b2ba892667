"""A model served over an OpenAI-compatible API (llama-server, Ollama, LM Studio, vLLM, llama-cpp-python).

Every request has connect and read timeouts, transient failures (nothing listening yet, a
restart, 502/503/504) are retried a few times with backoff, and every failure ends as one
``ServerError`` line that names the server and what to do. The API key comes from the
environment only, so it never lands in shell history or in a run's record.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from yarn_cli.errors import ContextExceededError, InputError, ServerError
from yarn_cli.serving import DEFAULT_READ_TIMEOUT

API_KEY_VARIABLES = ("YARN_CLI_API_KEY", "OPENAI_API_KEY")
CONNECT_TIMEOUT = 10.0
RETRIES = 3
BACKOFF = 1.0  # seconds, doubled each retry
TRANSIENT_STATUS = frozenset({502, 503, 504})
T = TypeVar("T")


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None  # what the server says it evaluated (usage.prompt_tokens)
    finish_reason: str | None


@dataclass(frozen=True)
class ServedTemplate:
    """Whether the served model has a chat template of its own, as the server says; None: it does not say."""

    present: bool | None
    source: str | None = None  # where the server said it, for the one line that tells the user

    def describe(self) -> str:
        if self.present is None:
            return "not reported"
        return "the model's" if self.present else "none"


# What llama-server's /props reports as its chat template when the model has none: llama.cpp's ChatML
# fallback (common/chat.cpp, CHATML_TEMPLATE_SRC), which the model was never trained on.
LLAMA_CPP_CHATML_FALLBACK = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)
# Ollama's template for a model that has none (template/template.go, DefaultTemplate): the prompt as it is.
OLLAMA_NO_TEMPLATE = "{{ .Prompt }}"


@dataclass(frozen=True)
class PromptScores:
    """What a server echoed of a prompt: per token, its log-probability given the ones before.

    Servers differ in what the echo holds besides the prompt's text tokens (a BOS at its start, the
    generated token at its end), so the usage counts come with it; the first entry has no value.
    """

    tokens: list[str]
    logprobs: list[float | None]
    top: list[dict[str, float] | None]  # the most likely tokens at each position, as the server gave them
    prompt_tokens: int | None  # usage.prompt_tokens: a BOS included where the server adds one
    completion_tokens: int  # usage.completion_tokens (1 when not reported: one was asked for)


class ServerStatusError(ServerError):
    """The server answered a request with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NonFiniteScoresError(ServerError):
    """The server could not send a log-probability: -inf or NaN, which JSON cannot carry (vLLM answers 400)."""


class MissingEndpointError(ServerError):
    """The server has no such endpoint (404/405 where one was only tried)."""


def base_url(url: str) -> str:
    """The API root, ending in /v1: ``http://host:8080`` and ``http://host:8080/v1/`` both work."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--server {url!r} is not an http(s) URL; give one such as http://127.0.0.1:8080/v1")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def api_key() -> str | None:
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


class ServerClient:
    """One OpenAI-compatible server, and the model on it that the requests name."""

    def __init__(self, url: str, model: str | None = None, *, read_timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        self.url = base_url(url)
        key = api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT), follow_redirects=True
        )
        self.read_timeout = read_timeout
        self._dialects: dict[str, str] = {}  # tokenize/detokenize: the server's request shape, once one worked
        self._props: dict[str, Any] | None = None  # llama-server's /props, once asked (None: no such endpoint)
        self._props_asked = False
        self.model = model or self._first_model()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> str:
        """The server's root, where llama-server and llama-cpp-python keep their own endpoints."""
        return self.url[: -len("/v1")]

    def _first_model(self) -> str:
        data = self._request("GET", f"{self.url}/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not models or not isinstance(models[0], dict) or "id" not in models[0]:
            raise ServerError(
                f"{self.url}/models lists no model; is this an OpenAI-compatible server? Name one with --server-model"
            )
        return str(models[0]["id"])

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        """Greedy completion of ``prompt``, and how many prompt tokens the server says it took.

        ``repeat_penalty`` 1 (off), as a local run: llama-cpp-python's server defaults to 1.1,
        which changes a greedy answer that repeats a token of its last 64 (RULER's numbers, word lists).
        """
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "top_k": 1,
                "repeat_penalty": 1.0}  # fmt: skip
        data = self._request("POST", f"{self.url}/completions", json=body)
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            tokens = usage.get("prompt_tokens")
            return Completion(
                text=str(choice.get("text") or ""),
                # 0: a server that does not count (or counts only uncached tokens, as some Ollama versions)
                prompt_tokens=int(tokens) if isinstance(tokens, int) and tokens > 0 else None,
                finish_reason=choice.get("finish_reason"),
            )
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ServerError(
                f"{self.url}/completions answered without a completion ({exc!r}); {_not_openai()}"
            ) from exc

    def count_tokens(self, text: str) -> int:
        """How many tokens the server counts in ``text`` as a prompt (its usage.prompt_tokens)."""
        counted = self.complete(text, 1).prompt_tokens
        if counted is None:
            raise ServerError(
                f"{self.url} reports no usage.prompt_tokens to count a prompt by; give the served GGUF with "
                "--tokenizer MODEL.gguf"
            )
        return counted

    def context_size(self) -> int | None:
        """The context a request gets, where the server says: llama-server's /props, vLLM's model list.

        None elsewhere (llama-cpp-python, Ollama and LM Studio's OpenAI APIs do not say).
        """
        data = self.props()
        if isinstance(data, dict):
            settings = data.get("default_generation_settings")
            n_ctx = (settings.get("n_ctx") if isinstance(settings, dict) else None) or data.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                return n_ctx
        try:
            listed = self._request("GET", f"{self.url}/models")
        except ServerError:
            return None
        models = listed.get("data") if isinstance(listed, dict) else None
        for entry in models if isinstance(models, list) else []:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                length = entry.get("max_model_len")  # vLLM
                return length if isinstance(length, int) and length > 0 else None
        return None

    def props(self) -> dict[str, Any] | None:
        """llama-server's /props (its context, its chat template), asked once; None from other servers."""
        if not self._props_asked:
            try:
                data = self._request("GET", f"{self.root}/props", missing_ok=True)
            except ServerError:
                data = None
            self._props, self._props_asked = (data if isinstance(data, dict) else None), True
        return self._props

    def chat_template(self) -> ServedTemplate:
        """Whether the served model has a chat template of its own, where the server says so.

        llama-server's /props gives the template it uses (llama.cpp's ChatML fallback when the model has
        none); Ollama's /api/show gives its own template (``{{ .Prompt }}`` when the model has none);
        vLLM's /tokenize of a message refuses a model without one. llama-cpp-python's server (which falls
        back to a llama-2 template) and LM Studio say nothing: not reported.
        """
        props = self.props()
        if props is not None and isinstance(props.get("chat_template"), str):
            template = props["chat_template"].strip()
            return ServedTemplate(bool(template) and template != LLAMA_CPP_CHATML_FALLBACK, "llama-server's /props")
        try:  # Ollama's own API; "name" for its versions before "model"
            shown = self._request(
                "POST", f"{self.root}/api/show", json={"model": self.model, "name": self.model}, missing_ok=True
            )
        except (MissingEndpointError, ServerStatusError):
            shown = None
        if isinstance(shown, dict) and isinstance(shown.get("template"), str):
            return ServedTemplate(shown["template"].strip() not in ("", OLLAMA_NO_TEMPLATE), "Ollama's /api/show")
        message = {"model": self.model, "messages": [{"role": "user", "content": "."}], "add_generation_prompt": True}
        try:
            tokenized = self._request("POST", f"{self.root}/tokenize", json=message, missing_ok=True)
        except MissingEndpointError:
            return ServedTemplate(None)
        except ServerStatusError as exc:  # vLLM: "... you must provide a chat template if the tokenizer does not ..."
            refused = exc.status == 400 and "chat template" in str(exc).lower()
            return ServedTemplate(False, "vLLM's /tokenize") if refused else ServedTemplate(None)
        # vLLM's answer (with max_model_len), not a server that ignores a body it does not know
        if isinstance(tokenized, dict) and tokenized.get("tokens") and "max_model_len" in tokenized:
            return ServedTemplate(True, "vLLM's /tokenize")
        return ServedTemplate(None)

    def stream(self, endpoint: str, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """The events of a streamed answer from ``/v1/<endpoint>``; closing the generator ends the request.

        No retry once a request is under way: part of a reply may already be shown.
        """
        url = f"{self.url}/{endpoint}"
        try:
            with self._http.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode(response, url, missing_ok=False)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise ServerError(f"{url} streamed something that is not JSON: {data[:80]!r}") from exc
                    if isinstance(event, dict) and "error" in event:
                        raise ServerError(f"{url} stopped the reply: {event['error']}")
                    if isinstance(event, dict):
                        yield event
        except httpx.ConnectError as exc:
            raise ServerError(f"cannot connect to {self.url}: {_reason(exc)}; is the server running?") from exc
        except httpx.TimeoutException as exc:
            raise ServerError(f"{url} did not answer within {self.read_timeout:g} s") from exc
        except httpx.RemoteProtocolError as exc:
            raise ServerError(f"{self.url} closed the connection mid-reply ({exc}); did it stop?") from exc
        except httpx.HTTPError as exc:
            raise ServerError(f"the reply from {url} failed: {_reason(exc)}") from exc

    def prompt_logprobs(self, text: str, top: int = 1) -> PromptScores:
        """The log-probability of every token of ``text``: ``/v1/completions`` with ``echo`` and ``logprobs``.

        llama-cpp-python's server (unless started with ``--logits_all false``) and vLLM answer it;
        llama-server and Ollama give log-probabilities of generated tokens only.
        """
        body = {
            "model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "top_k": 1,
            "echo": True, "logprobs": top,
        }  # fmt: skip
        try:
            data = self._request("POST", f"{self.url}/completions", json=body)
        except ServerStatusError as exc:  # a refusal; a dead or slow server keeps its own message
            if "out of range float" in str(exc).lower():
                raise NonFiniteScoresError(
                    f"{self.url} could not send the window's log-probabilities: one is -inf or NaN ({exc})"
                ) from exc
            raise ServerError(
                f"{self.url} gives no log-probabilities of a prompt ({exc}); llama-cpp-python's server gives them "
                "unless started with --logits_all false, llama-server and Ollama do not"
            ) from exc
        try:
            scores = data["choices"][0]["logprobs"]
            values = scores["token_logprobs"]
            usage = data.get("usage") or {}
            counted, generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
            top_entries = scores.get("top_logprobs") or [None] * len(values)
            return PromptScores(
                tokens=[str(t) for t in scores["tokens"]],
                logprobs=[None if v is None else float(v) for v in values],
                top=[None if e is None else {str(k): float(v) for k, v in e.items()} for e in top_entries],
                prompt_tokens=int(counted) if isinstance(counted, int) and counted > 0 else None,
                completion_tokens=int(generated) if isinstance(generated, int) and generated >= 0 else 1,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ServerError(
                f"{self.url}/completions echoed no log-probabilities of the prompt (no logprobs.token_logprobs); "
                "llama-cpp-python's server gives them unless started with --logits_all false, llama-server and "
                "Ollama give none"
            ) from exc

    def next_token(self, text: str, top: int = 5) -> dict[str, float]:
        """The most likely next tokens after ``text`` and their log-probabilities, from a generation."""
        body = {
            "model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "top_k": 1, "logprobs": top,
        }  # fmt: skip
        data = self._request("POST", f"{self.url}/completions", json=body)
        try:
            entry = data["choices"][0]["logprobs"]["top_logprobs"][0]
            found = {str(k): float(v) for k, v in entry.items()}
            if not found:
                raise ValueError("no tokens")
            return found
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ServerError(
                f"{self.url}/completions gave no log-probabilities of a generated token ({exc!r})"
            ) from exc

    def detokenize(self, tokens: list[int]) -> str | None:
        """The text of ``tokens`` by the server's own tokenizer, None if it has no endpoint for it."""
        fields = {"llama-server or vLLM": ("content", "prompt"), "llama-cpp-python": ("text",)}

        def read(name: str, data: Any) -> str | None:
            found = [data[f] for f in fields[name] if isinstance(data, dict) and isinstance(data.get(f), str)]
            return str(found[0]) if found else None

        return self._ask("detokenize", [
            ("llama-server or vLLM", "/detokenize", {"tokens": tokens, "model": self.model}),
            ("llama-cpp-python", "/extras/detokenize", {"tokens": tokens, "model": self.model}),
        ], read)  # fmt: skip

    def tokenize(self, text: str) -> list[int] | None:
        """The server's own tokens for ``text`` (with BOS, as a completion prompt), None if it has no endpoint."""

        def read(name: str, data: Any) -> list[int] | None:
            found = data.get("tokens") if isinstance(data, dict) else None
            # a server that ignores a body it does not understand may answer no tokens for a text
            if not isinstance(found, list) or (text and not found):
                return None
            return [int(t) if isinstance(t, int) else int(t["id"]) for t in found]

        return self._ask("tokenize", [
            ("llama-server", "/tokenize", {"content": text, "add_special": True, "model": self.model}),
            ("vLLM", "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": True}),
            ("llama-cpp-python", "/extras/tokenize", {"input": text, "model": self.model}),
        ], read)  # fmt: skip

    def _ask(
        self, what: str, shapes: list[tuple[str, str, dict[str, Any]]], read: Callable[[str, Any], T | None]
    ) -> T | None:
        """One of a server's own endpoints, in the request shape of the server it turns out to be.

        Servers share these paths with other request shapes (llama-server's /tokenize takes
        ``content``, vLLM's ``prompt``), so until a shape has worked, a missing endpoint or a request
        refused as malformed (400, 422) means "try the next shape". Once one has worked only it is
        asked, and any failure is the server's, and ends the run. None: no shape gave an answer.
        """
        known = self._dialects.get(what)
        for name, path, body in [s for s in shapes if s[0] == known] or shapes:
            try:
                data = self._request("POST", f"{self.root}{path}", json=body, missing_ok=True)
            except MissingEndpointError:
                if known:
                    raise
                continue
            except ServerStatusError as exc:
                if known or exc.status not in (400, 422):
                    raise
                continue
            value = read(name, data)
            if value is not None:
                self._dialects[what] = name
                return value
        return None

    def _request(self, method: str, url: str, *, json: Any = None, missing_ok: bool = False) -> Any:
        delay = BACKOFF
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                response = self._http.request(method, url, json=json)
            except httpx.ConnectError as exc:
                if last:
                    raise ServerError(f"cannot connect to {self.url}: {_reason(exc)}; is the server running?") from exc
            except httpx.TimeoutException as exc:
                if last or not isinstance(exc, httpx.ConnectTimeout):
                    raise ServerError(
                        f"{url} did not answer within {self.read_timeout:g} s; a long prompt on a slow server may "
                        "need --timeout SECONDS"
                    ) from exc
            except httpx.RemoteProtocolError as exc:  # the server closed the connection: it died or restarted
                if last:
                    raise ServerError(f"{self.url} closed the connection mid-request ({exc}); did it stop?") from exc
            except httpx.HTTPError as exc:
                raise ServerError(f"request to {url} failed: {_reason(exc)}") from exc
            else:
                if last or response.status_code not in TRANSIENT_STATUS:
                    return self._decode(response, url, missing_ok)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _decode(self, response: httpx.Response, url: str, missing_ok: bool) -> Any:
        status = response.status_code
        if status in (404, 405) and missing_ok:
            raise MissingEndpointError(f"{url}: no such endpoint")
        if status >= 400:
            message = _error_message(response)
            if status == 400 and ("context" in message.lower() and ("exceed" in message.lower() or "max" in message)):
                raise ContextExceededError(f"{self.url} refused the prompt: {message}")
            if status in (401, 403):
                raise ServerError(
                    f"{self.url} refused the request ({status}: {message}); set the API key in "
                    f"{API_KEY_VARIABLES[0]} (or {API_KEY_VARIABLES[1]})"
                )
            if status == 404:
                raise ServerError(f"{url} does not exist (404: {message}); {_not_openai()}")
            raise ServerStatusError(f"{url} answered HTTP {status}: {message}", status)
        try:
            return response.json()
        except ValueError as exc:
            kind = response.headers.get("content-type", "unknown content")
            raise ServerError(f"{url} did not answer JSON ({kind}); {_not_openai()}") from exc


def _not_openai() -> str:
    return "the URL must be an OpenAI-compatible API, such as http://127.0.0.1:8080/v1 for llama-server"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1]


def _error_message(response: httpx.Response) -> str:
    """The server's own error text: OpenAI's {"error": {"message": ...}}, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("detail"):
            return str(data["detail"])
    return str(data)[:200]
