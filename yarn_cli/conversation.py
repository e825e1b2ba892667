"""A conversation and its figures, whoever runs the model: llama.cpp here, or a server.

Kept apart from both, so the chat command's REPL, saving and loading work the same for either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yarn_cli.errors import InputError, OutputError
from yarn_cli.files.staging import write_atomically

# A reply that ends in the same text this many times over, and this long at least, is a loop.
LOOP_REPEATS = 8
LOOP_MIN_CHARS = 64
LOOP_MAX_PERIOD = 256


@dataclass
class TurnStats:
    """One reply's figures, from llama.cpp's performance counters."""

    prompt_tokens: int = 0  # the whole formatted conversation
    prompt_evaluated: int = 0  # the part not already in the KV cache
    prompt_ms: float = 0.0
    completion_tokens: int = 0
    generation_ms: float = 0.0
    first_token_ms: float = 0.0
    context_used: int = 0
    n_ctx: int = 0
    stopped: str = "eos"  # eos, length, loop, interrupted
    dropped_turns: int = 0
    prompt_counted: bool = True  # False: a server that does not report its prompt tokens
    # The RoPE scale factor the reply ran with, as llama.cpp set it up (1: no scaling; a model that came
    # with its own YaRN x40 runs at 40); None where it is not known (a served model).
    scale: float | None = None
    ladder_factor: float | None = None  # --yarn dynamic: the ladder's YaRN factor (None: the model as it came)
    rescaled_from: float | None = None  # --yarn dynamic: the ladder factor before this reply, when it changed
    rescaled: bool = False
    rescale_seconds: float = 0.0  # loading the model with the new scale (the re-evaluation is in prompt_ms)
    resized_from: int = 0  # the context's size before this reply, when it changed (0: it did not)
    resize_seconds: float = 0.0  # making the new context (the re-evaluation is in prompt_ms)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_evaluated / self.prompt_ms * 1000 if self.prompt_ms else 0.0

    @property
    def generation_tps(self) -> float:
        return self.completion_tokens / self.generation_ms * 1000 if self.generation_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompt_tokens_per_s"] = round(self.prompt_tps, 2)
        data["generation_tokens_per_s"] = round(self.generation_tps, 2)
        return data


# Between one reply and the next input, in plain completion.
PLAIN_TURN_SEPARATOR = "\n"


def ends_in_loop(text: str) -> bool:
    """The text ends with one block of up to 256 characters said 8 times in a row (64 characters at least).

    Small models fall into such loops under greedy decoding ("la France, la France, ...") and
    would go on until the context is full.
    """
    tail = text[-LOOP_MAX_PERIOD * LOOP_REPEATS :]
    for period in range(max(1, -(-LOOP_MIN_CHARS // LOOP_REPEATS)), LOOP_MAX_PERIOD + 1):
        if period * LOOP_REPEATS > len(tail):
            return False
        if tail.endswith(tail[-period:] * LOOP_REPEATS):
            return True
    return False


@dataclass
class Conversation:
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)  # alternating user / assistant

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    @staticmethod
    def plain_text(messages: list[dict[str, str]]) -> str:
        """Messages as one text to continue, for a model without a chat template (a base model).

        A reply continues the text before it; every other message starts on a new line. An invented
        template would only teach a base model to echo role markers.
        """
        parts = [m["content"] if m["role"] == "assistant" else PLAIN_TURN_SEPARATOR + m["content"] for m in messages]
        return "".join(parts).removeprefix(PLAIN_TURN_SEPARATOR)

    def save(self, path: Path) -> None:
        data = {"system": self.system, "messages": self.turns}
        try:
            write_atomically(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        except OSError as exc:
            raise OutputError(f"cannot save the conversation to {path}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls, path: Path) -> Conversation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in data["messages"]]
        except FileNotFoundError as exc:
            raise InputError(f"{path} does not exist") from exc
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a conversation saved by /save ({exc})") from exc
        if any(t["role"] not in ("user", "assistant") for t in turns):
            raise InputError(f"{path}: messages must have the role user or assistant")
        system = data.get("system")
        return cls(system=str(system) if system else None, turns=turns)


class TurnTaking:
    """What a chat session does with its conversation, whatever generates the replies (``_generate``).

    ``_generate`` answers the conversation as it stands and appends the reply; a failure raised
    from it takes the user's new message back off when it is one of ``_retract_on``.
    """

    conversation: Conversation
    _retract_on: tuple[type[BaseException], ...] = (BaseException,)

    def _generate(self, on_text: Callable[[str], None] | None) -> tuple[str, TurnStats]:
        raise NotImplementedError

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> tuple[str, TurnStats]:
        """Add a user message and generate the answer; KeyboardInterrupt stops it and keeps what came."""
        self.conversation.turns.append({"role": "user", "content": text})
        try:
            return self._generate(on_text)
        except self._retract_on:
            if self.conversation.turns and self.conversation.turns[-1]["role"] == "user":
                self.conversation.turns.pop()
            raise

    def regenerate(self, on_text: Callable[[str], None] | None = None) -> tuple[str, TurnStats]:
        turns = self.conversation.turns
        if not turns:
            raise InputError("there is no reply to regenerate yet")
        if turns[-1]["role"] == "assistant":
            turns.pop()
        return self._generate(on_text)

    def clear(self) -> None:
        self.conversation.turns.clear()
