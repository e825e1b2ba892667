"""The size of a chat's context when -c is not given: sized to the work, never to all of the memory.

A KV cache costs memory and the time to clear it when it is made: 0.41 s for 4,096 tokens of a 7B on
2 cores, about 12 s for its whole 131,072 (6.1 s measured for 65,536; single readings). llama-cli and LM Studio start at
4,096 tokens; so does a conversation here, which then grows (``context_resize``) as it needs, up to
the model's context and what the memory allows. A one-shot gets its prompt plus its reply's cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarn_cli.llama.memory import context_limit
from yarn_cli.model import Model

# Where a conversation starts.
CHAT_START = 4096
# A reply without a cap (-n -1) is given at least this much room, or a quarter of the context.
MIN_FREE = 1024
# Tokens beyond what a turn needs, and the granularity of every size.
HEADROOM = 64
STEP = 256
# What a chat template may add to a one-shot prompt, in bytes (a role marker, a default system prompt).
TEMPLATE_BYTES = 256
# A one-shot estimate above this starts at PROBE tokens: the prompt is counted once the model is
# loaded and the context is made to measure before anything is evaluated (a few milliseconds).
ESTIMATE_MAX = 4096
PROBE = 1024


@dataclass(frozen=True)
class ChatContext:
    """The context a chat starts with, the most it may grow to, and why, in words."""

    start: int
    limit: int
    reason: str


def rounded(tokens: int) -> int:
    """``tokens`` plus the headroom, rounded up to a whole number of steps."""
    return -(-(tokens + HEADROOM) // STEP) * STEP


def reply_room(max_tokens: int, n_ctx: int) -> int:
    """The room a reply is given: its cap, or for an uncapped one at least MIN_FREE tokens."""
    return max_tokens if max_tokens >= 0 else max(MIN_FREE, n_ctx // 4)


def chat_context(model: Model, n_gpu_layers: int, prompt: str | None, max_tokens: int) -> ChatContext:
    """Where a chat starts and how far it may grow.

    ``prompt``: a one-shot's text (its system prompt included), whose tokens are at most about its
    bytes; None for a conversation.
    """
    limit, capped = context_limit(model, n_gpu_layers)
    why_limit = f": {capped}" if capped else ""
    if prompt is None:
        start = min(CHAT_START, limit)
        grows = f", grows up to {limit} as the conversation needs{why_limit}" if limit > start else ""
        return ChatContext(start, limit, f"{start} tokens{grows}; -c N to fix")
    estimate = rounded(len(prompt.encode("utf-8")) + TEMPLATE_BYTES + reply_room(max_tokens, CHAT_START))
    start = min(estimate if estimate <= ESTIMATE_MAX else PROBE, limit)
    return ChatContext(start, limit, f"sized to the prompt and its reply (at most {limit}{why_limit}); -c N to set")
