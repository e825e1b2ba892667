"""The metadata keys that describe a model's positions, and yarn-cli's own keys.

Key names come from gguf-py's ``Keys`` templates, filled in with the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import Keys

DEFAULT_FREQ_BASE = 10000.0  # llama.cpp's default when rope.freq_base is absent

# yarn-cli's undo record: the tracked keys as they were before the first conversion (JSON).
RECORD_KEY = "yarn_cli.original"
VERSION_KEY = "yarn_cli.version"


def arch_key(template: str, arch: str) -> str:
    return template.format(arch=arch)


@dataclass(frozen=True)
class RopeKeys:
    """The metadata keys that describe a model's positions, for one architecture."""

    context_length: str
    freq_base: str
    dimension_count: str
    scaling_type: str
    scaling_factor: str
    original_context: str
    attn_factor: str
    finetuned: str
    beta_fast: str
    beta_slow: str
    scale_linear: str  # the legacy name of the factor, read when scaling.factor is absent
    # Read, never written: they shape what llama.cpp does with the keys above.
    yarn_log_multiplier: str
    freq_base_swa: str
    sliding_window: str

    @classmethod
    def for_arch(cls, arch: str) -> RopeKeys:
        rope = Keys.Rope
        return cls(
            context_length=arch_key(Keys.LLM.CONTEXT_LENGTH, arch),
            freq_base=arch_key(rope.FREQ_BASE, arch),
            dimension_count=arch_key(rope.DIMENSION_COUNT, arch),
            scaling_type=arch_key(rope.SCALING_TYPE, arch),
            scaling_factor=arch_key(rope.SCALING_FACTOR, arch),
            original_context=arch_key(rope.SCALING_ORIG_CTX_LEN, arch),
            attn_factor=arch_key(rope.SCALING_ATTN_FACTOR, arch),
            finetuned=arch_key(rope.SCALING_FINETUNED, arch),
            beta_fast=arch_key(rope.SCALING_YARN_BETA_FAST, arch),
            beta_slow=arch_key(rope.SCALING_YARN_BETA_SLOW, arch),
            scale_linear=f"{arch}.rope.scale_linear",
            yarn_log_multiplier=arch_key(rope.SCALING_YARN_LOG_MUL, arch),
            freq_base_swa=arch_key(rope.FREQ_BASE_SWA, arch),
            sliding_window=arch_key(Keys.Attention.SLIDING_WINDOW, arch),
        )

    @property
    def tracked(self) -> tuple[str, ...]:
        """Every key a conversion may write; their prior state is recorded for an exact undo."""
        return (self.context_length, self.freq_base, *self.scaling)

    @property
    def scaling(self) -> tuple[str, ...]:
        """The keys that together say "this file is scaled" (cleared before a new scaling)."""
        return (
            self.scaling_type,
            self.scaling_factor,
            self.original_context,
            self.attn_factor,
            self.finetuned,
            self.beta_fast,
            self.beta_slow,
            self.scale_linear,
        )
