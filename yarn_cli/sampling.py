"""Sampling settings for generation, with llama.cpp's names and defaults.

Kept apart from the runtime so the command line can show the defaults without loading llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarn_cli.errors import InputError

# llama.cpp's sampling defaults (common/common.h), which llama-cli users know.
DEFAULT_TEMP = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.0
# A one-shot reply without -n stops here: a small model can loop until its context is full.
ONE_SHOT_MAX_TOKENS = 512


@dataclass(frozen=True)
class Sampling:
    temp: float = DEFAULT_TEMP
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    seed: int | None = None
    max_tokens: int = -1  # -1: until the end-of-turn token or the context is full
    stop_loops: bool = False  # end a reply that keeps repeating the same text

    def check(self) -> None:
        # written so that NaN, which fails every comparison, is refused too
        if not self.temp >= 0:
            raise InputError(f"--temp must be 0 or more, got {self.temp:g}")
        if not 0 <= self.top_p <= 1:
            raise InputError(f"--top-p must be between 0 and 1, got {self.top_p:g}")
        if not 0 <= self.min_p <= 1:
            raise InputError(f"--min-p must be between 0 and 1, got {self.min_p:g}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be 0 (off) or more, got {self.top_k}")
        if not self.repeat_penalty > 0:
            raise InputError(f"--repeat-penalty must be positive, got {self.repeat_penalty:g}")
        if self.max_tokens == 0 or self.max_tokens < -1:
            raise InputError(f"-n/--max-tokens must be positive (or -1 for no limit), got {self.max_tokens}")
