"""A served model's tokens, where no GGUF is at hand: the server's own tokenizer, or an estimate.

llama-server, vLLM and llama-cpp-python's server tokenize over HTTP. Ollama and LM Studio do not:
there prompt sizes are estimated from the server's own ``usage.prompt_tokens`` counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from yarn_cli.backend import Tokenizer
from yarn_cli.errors import InputError, ServerError
from yarn_cli.serving.client import ServerClient

# Any text does: a server that ignores a request shape it does not understand answers no tokens for it.
PROBE = "probe"


class ServerTokens(Tokenizer):
    """The server's tokenize and detokenize endpoints (llama-server, vLLM, llama-cpp-python's server)."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        self._empty: list[int] | None = None  # what the server makes of an empty prompt: its BOS, or nothing

    @classmethod
    def probe(cls, client: ServerClient) -> ServerTokens | None:
        """The server's tokenizer, None if it has no tokenize endpoint."""
        return cls(client) if client.tokenize(PROBE) is not None else None

    def _empty_prompt(self) -> list[int]:
        if self._empty is None:
            self._empty = self._tokens("")
        return self._empty

    def _tokens(self, text: str) -> list[int]:
        found = self.client.tokenize(text)
        if found is None:
            raise ServerError(f"{self.client.url} stopped answering its tokenize endpoint")
        return found

    @property
    def add_bos(self) -> bool:
        return len(self._empty_prompt()) > 0

    @property
    def bos_token(self) -> int:
        empty = self._empty_prompt()
        return empty[0] if empty else 0

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """The server tokenizes a completion prompt with its BOS; without ``add_bos`` it is taken off."""
        found = self._tokens(text)
        return found if add_bos else found[int(self.add_bos) :]

    def detokenize(self, tokens: Sequence[int]) -> str:
        found = self.client.detokenize(list(tokens))
        if found is None:
            raise InputError(
                f"{self.client.url} has no detokenize endpoint to turn windows back into text; give the served "
                "GGUF with --tokenizer MODEL.gguf"
            )
        return found

    def describe(self) -> str:
        return f"server {self.client.url}"


class EstimatedTokens(Tokenizer):
    """Token counts estimated from a server's own ``usage.prompt_tokens``, for servers with no tokenizer to ask.

    Two requests measure the fixed part of a prompt and its filler's tokens per character (``base``
    and ``longer``: the same prompt with more filler); every prompt's size is then estimated from its
    length in characters (the filler is one sentence repeated, so the rate holds), and each answer
    records what the server really counted.
    """

    def __init__(self, client: ServerClient, base: str, longer: str) -> None:
        self.client = client
        self.fixed = client.count_tokens(base)
        self.base_chars = len(base)
        self.per_char = (client.count_tokens(longer) - self.fixed) / (len(longer) - len(base))

    @property
    def add_bos(self) -> bool:
        return False  # unknown, and not needed: only whole prompts are estimated

    @property
    def bos_token(self) -> int:
        return 0

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """Placeholder tokens, as many as the estimate: a served prompt is sent as text."""
        return [0] * max(1, round(self.fixed + (len(text) - self.base_chars) * self.per_char))

    def detokenize(self, tokens: Sequence[int]) -> str:
        raise InputError(
            f"{self.client.url} has no tokenize endpoint to cut texts in the model's tokens; give the served GGUF "
            "with --tokenizer MODEL.gguf"
        )

    def describe(self) -> str:
        return f"estimated from {self.client.url} usage.prompt_tokens"
