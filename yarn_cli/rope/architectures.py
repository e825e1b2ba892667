"""How llama.cpp applies RoPE, per architecture: which have none, which scale only some layers.

Taken from llama.cpp's loader (``load_arch_hparams`` in ``src/models/<arch>.cpp``) and graph
builders. Sliding-window layers see at most their window of tokens, so their positions never
need stretching; what llama.cpp does with a scaling on them differs by architecture, and
differs between a scaling in the file and the run-time flags.
"""

from __future__ import annotations

from enum import Enum

# Architectures whose positions are not rotary, with the reason shown to the user.
NO_ROPE_ARCHS: dict[str, str] = {
    "bloom": "ALiBi attention biases",
    "mpt": "ALiBi attention biases",
    "jais": "ALiBi attention biases",
    "refact": "ALiBi attention biases",
    "jina-bert-v2": "ALiBi attention biases",
    "gpt2": "learned absolute position embeddings",
    "starcoder": "learned absolute position embeddings",
    "bert": "learned absolute position embeddings",
    "t5": "T5 relative position buckets",
    "t5encoder": "T5 relative position buckets",
    "mamba": "a recurrent state space model",
    "mamba2": "a recurrent state space model",
    "rwkv6": "a recurrent (RWKV) model",
    "rwkv6qwen2": "a recurrent (RWKV) model",
    "rwkv7": "a recurrent (RWKV) model",
    "arwkv7": "a recurrent (RWKV) model",
}


class WindowScaling(Enum):
    """What llama.cpp does with a RoPE scaling on an architecture's sliding-window layers."""

    NO_WINDOW = "no sliding-window layers"
    # rope_freq_scale_train_swa = rope_freq_scale_train: the file's scaling reaches every layer, the
    # run-time --rope-scale only the global ones (transformers, with one rotary embedding for all
    # layers, scales them all too).
    FOLLOWS_FILE = "follows the file"
    # rope_freq_scale_train_swa stays 1: the global layers are scaled, the windowed ones never
    # (Gemma 3's own recipe: its 8x linear scaling is on the global layers only).
    NEVER = "never scaled"
    # Only the windowed layers rotate (with the run-time scaling, like the file's); the global
    # layers use no positions at all.
    ONLY_ROPE = "the only RoPE layers"


WINDOW_SCALING: dict[str, WindowScaling] = {
    **dict.fromkeys(
        ("gemma2", "gpt-oss", "llama4", "afmoe", "smallthinker", "maple", "spark2_5"),
        WindowScaling.FOLLOWS_FILE,
    ),
    **dict.fromkeys(
        (
            "gemma3",
            "gemma3n",
            "gemma4",
            "gemma-embedding",
            "olmo2",
            "laguna",
            "mellum",
            "mimo2",
            "step35",
            "plamo3",
            "dots3note",
            "granite-swa",
            "muse-glimmer",
            "modern-bert",
            "lfm2",
        ),
        WindowScaling.NEVER,
    ),
    **dict.fromkeys(("cohere2", "cohere2moe", "exaone4", "exaone-moe"), WindowScaling.ONLY_ROPE),
}
# Architectures whose window layers rotate with the context's base, not rope.freq_base_swa.
CONTEXT_BASE_WINDOWS = frozenset({"cohere2", "cohere2moe", "exaone4", "exaone-moe", "olmo2", "mellum"})

# A window llama.cpp assumes when the file states none (other architectures then have no window, or need the key).
DEFAULT_WINDOW = {"gemma2": 4096}
# The sliding-window layers' base when the file has no rope.freq_base_swa (elsewhere: the global base).
DEFAULT_FREQ_BASE_SWA = {"gemma3": 10000.0, "gemma3n": 10000.0}
# llama.cpp's default layer pattern (attention.sliding_window_pattern): in each group of n layers, the
# last is global and the others are windowed.
DEFAULT_WINDOW_PATTERN = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3n": 5,
    "gpt-oss": 2,
    "cohere2": 4,
    "cohere2moe": 4,
    "olmo2": 4,
    "exaone4": 4,
    "exaone-moe": 4,
    "llama4": 4,
    "smallthinker": 4,
    "laguna": 4,
    "mellum": 4,
    "plamo3": 8,
}
# Where the global layer comes first in each group (llama.cpp's dense_first).
DENSE_FIRST = frozenset({"cohere2moe", "laguna", "modern-bert", "smallthinker"})


def window_layers(arch: str, n_layers: int, pattern: object) -> int | None:
    """How many of ``n_layers`` are sliding-window layers, as llama.cpp sets them; None where unknown.

    ``pattern`` is the file's ``attention.sliding_window_pattern``: one flag per layer, a group
    size, or None for the architecture's default.
    """
    if isinstance(pattern, list):
        return sum(1 for flag in pattern[:n_layers] if flag)
    size = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) else DEFAULT_WINDOW_PATTERN.get(arch)
    if size is None:
        return None
    if size == 0:
        return n_layers
    if arch in DENSE_FIRST:
        return sum(1 for il in range(n_layers) if il % size != 0)
    return sum(1 for il in range(n_layers) if il % size < size - 1)


# Architectures whose loader reads the yarn_beta_fast / yarn_beta_slow keys.
BETA_ARCHS = frozenset({"grok", "mistral3"})
# YaRN's beta_fast where an architecture's loader starts from its own value (else 32).
DEFAULT_BETA_FAST_BY_ARCH = {"grok": 8.0}
# Architectures whose loader reads rope.scaling.yarn_log_multiplier (DeepSeek's mscale_all_dim).
LOG_MULTIPLIER_ARCHS = frozenset({"deepseek2", "deepseek32", "mistral3"})


def window_scaling(arch: str) -> WindowScaling:
    return WINDOW_SCALING.get(arch, WindowScaling.NO_WINDOW)


def flags_match_file(arch: str) -> bool:
    """Whether llama.cpp's run-time scaling flags do exactly what the same keys in the file do."""
    return window_scaling(arch) != WindowScaling.FOLLOWS_FILE


def window_note(arch: str, window: int | None) -> str | None:
    """One sentence on what a scaling does to ``arch``'s sliding-window layers, None if it has none."""
    how = window_scaling(arch)
    size = f"{window}-token " if window else ""
    if how == WindowScaling.FOLLOWS_FILE:
        return (
            f"{arch}: llama.cpp applies a scaling in the file to every layer, the {size}sliding-window ones "
            "included (as transformers does), but the run-time flags (--rope-scale...) to the global layers "
            "only; yarn-cli's run-time scalings load the file's keys instead (--override-kv), so they match "
            "a converted file"
        )
    if how == WindowScaling.NEVER:
        return (
            f"{arch}: llama.cpp scales the global-attention layers only; the {size}sliding-window layers "
            "keep plain RoPE (from the file or from flags), which never needs stretching"
        )
    if how == WindowScaling.ONLY_ROPE:
        return (
            f"{arch}: only the {size}sliding-window layers use RoPE and the global layers use no positions, "
            "so a RoPE scaling only compresses distances that never exceed the window; the model reads "
            "longer text with a larger -c alone, and the scaling is unlikely to help"
        )
    return None
