"""A chat with a served model: the server applies its chat template, replies stream back as SSE.

The same interface as the local ``ChatSession`` (a ``Conversation``, ``reply``, ``regenerate``,
``clear``), so the chat command's one-shot and REPL modes work unchanged. Token counts and the
context come from the server where it reports them (``usage``, llama-server's ``/props``). A model
the server says has no chat template of its own (a base model) is not handed to the template the
server would invent: the conversation is continued as plain completion (``/v1/completions``), as a
local chat does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from yarn_cli.conversation import LOOP_MAX_PERIOD, LOOP_REPEATS, Conversation, TurnStats, TurnTaking, ends_in_loop
from yarn_cli.sampling import Sampling
from yarn_cli.serving.client import ServerClient


class ServerChatSession(TurnTaking):
    """A conversation bound to a served model."""

    def __init__(self, client: ServerClient, sampling: Sampling, system: str | None = None) -> None:
        sampling.check()
        self.client = client
        self.sampling = sampling
        self.conversation = Conversation(system=system)
        self.n_ctx = client.context_size() or 0  # 0: the server does not say
        self.template = client.chat_template()

    @property
    def plain(self) -> bool:
        """The server says the model has no chat template: the text so far is continued as it is."""
        return self.template.present is False

    def prompt_tokens(self, messages: list[dict[str, str]]) -> tuple[list[int], None]:
        """The messages' text in the server's tokens (without the template's markers), where it can count them."""
        text = Conversation.plain_text(messages) if self.plain else "\n".join(m["content"] for m in messages)
        return self.client.tokenize(text) or [], None

    def _body(self) -> dict[str, Any]:
        s = self.sampling
        messages = self.conversation.messages()
        body: dict[str, Any] = {
            "model": self.client.model,
            **({"prompt": Conversation.plain_text(messages)} if self.plain else {"messages": messages}),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temp,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "min_p": s.min_p,
            "repeat_penalty": s.repeat_penalty,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if s.max_tokens > 0:
            body["max_tokens"] = s.max_tokens
        return body

    def _generate(self, on_text: Callable[[str], None] | None) -> tuple[str, TurnStats]:
        stats = TurnStats(n_ctx=self.n_ctx)
        pieces: list[str] = []
        tail = ""
        chunks = 0
        usage: dict[str, Any] = {}
        start = time.perf_counter()
        events = self.client.stream("completions" if self.plain else "chat/completions", self._body())
        try:
            for event in events:
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    # a chat answer streams deltas, a completion its text
                    piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if piece:
                        if not chunks:
                            stats.first_token_ms = (time.perf_counter() - start) * 1000
                        chunks += 1
                        pieces.append(piece)
                        if on_text:
                            on_text(piece)
                    if choice.get("finish_reason"):
                        stats.stopped = "length" if choice["finish_reason"] == "length" else "eos"
                if self.sampling.stop_loops and pieces:
                    tail = (tail + pieces[-1])[-LOOP_MAX_PERIOD * LOOP_REPEATS :]
                    if ends_in_loop(tail):
                        stats.stopped = "loop"
                        break
        except KeyboardInterrupt:
            stats.stopped = "interrupted"
        finally:
            events.close()
        total_ms = (time.perf_counter() - start) * 1000
        reply = "".join(pieces)
        stats.prompt_counted = isinstance(usage.get("prompt_tokens"), int)  # llama-cpp-python's server streams none
        stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        stats.prompt_evaluated = stats.prompt_tokens
        stats.prompt_ms = stats.first_token_ms
        stats.completion_tokens = int(usage.get("completion_tokens") or chunks)
        stats.generation_ms = max(total_ms - stats.first_token_ms, 0.0)
        stats.context_used = stats.prompt_tokens + stats.completion_tokens
        self.conversation.turns.append({"role": "assistant", "content": reply})
        return reply, stats
