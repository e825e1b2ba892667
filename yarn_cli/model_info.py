"""What a GGUF header says about a model's positions: the facts ``inspect`` shows.

Defaults mirror llama.cpp's loader (``llama_model::load_hparams``) so the
figures are the ones llama.cpp will use, not just what the file spells out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gguf import Keys

from yarn_cli.errors import InputError, NotGGUFError
from yarn_cli.gguf_file import GGUFHeader
from yarn_cli.scaling import DEFAULT_FREQ_BASE, FileScaling, RopeKeys, arch_key, file_scaling

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

# Where llama.cpp applies the scaling to the global-attention layers only.
SWA_ARCHS = frozenset({"gemma2", "gemma3", "gemma3n", "cohere2", "gpt-oss"})
# Architectures whose loader reads the yarn_beta_fast / yarn_beta_slow keys.
BETA_ARCHS = frozenset({"grok", "mistral3"})

KV_CACHE_MULTIPLES = (1, 2, 4, 8)
F16_BYTES = 2


@dataclass(frozen=True)
class SplitInfo:
    number: int  # 1-based, as in the file name
    count: int
    tensors_total: int | None


@dataclass(frozen=True)
class ModelInfo:
    """A model's shape and positions as llama.cpp will see them."""

    header: GGUFHeader
    architecture: str
    keys: RopeKeys
    context_length: int | None
    freq_base: float
    rope_dims: int | None
    n_layers: int | None
    n_heads: int | None
    n_kv_heads: list[int] | None  # per layer
    head_dim_k: int | None
    head_dim_v: int | None
    uses_rope: bool
    no_rope_reason: str | None
    scaling: FileScaling
    split: SplitInfo | None
    yarn_cli_keys: dict[str, Any]

    @property
    def original_context(self) -> int | None:
        """The context the model was trained with: original_context_length, else context_length."""
        return self.scaling.original_context or self.context_length

    def kv_cache_bytes(self, n_ctx: int) -> int | None:
        """f16 K and V cache for ``n_ctx`` positions (llama.cpp's default cache type)."""
        if self.n_kv_heads is None or self.head_dim_k is None or self.head_dim_v is None:
            return None
        per_token = sum(h * (self.head_dim_k + self.head_dim_v) for h in self.n_kv_heads)
        return per_token * n_ctx * F16_BYTES

    def kv_cache_table(self) -> list[tuple[int, int, int | None]]:
        """(multiple, context, bytes) at 1x/2x/4x/8x the native context."""
        base = self.original_context
        if not base:
            return []
        return [(m, base * m, self.kv_cache_bytes(base * m)) for m in KV_CACHE_MULTIPLES]


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, list):
        return int(max(value)) if value else None
    return int(value)


def model_info(header: GGUFHeader) -> ModelInfo:
    arch = header.architecture
    if arch is None and header.get(Keys.Split.LLM_KV_SPLIT_COUNT) is not None:
        number = int(header.get(Keys.Split.LLM_KV_SPLIT_NO, 0)) + 1
        count = int(header.get(Keys.Split.LLM_KV_SPLIT_COUNT))
        raise InputError(
            f"{header.path} is split {number} of {count} and holds no model metadata; "
            f"pass the first split (its name ends in -00001-of-{count:05d}.gguf)"
        )
    if arch is None:
        raise NotGGUFError(f"{header.path} has no general.architecture key; it is not a model file")
    keys = RopeKeys.for_arch(arch)

    def get(template: str) -> Any:
        return header.get(arch_key(template, arch))

    n_layers = _int(get(Keys.LLM.BLOCK_COUNT))
    raw_heads = get(Keys.Attention.HEAD_COUNT)
    n_heads = _int(raw_heads)
    raw_kv = get(Keys.Attention.HEAD_COUNT_KV)
    if raw_kv is None:
        raw_kv = raw_heads  # llama.cpp: n_head_kv defaults to n_head
    if isinstance(raw_kv, list):
        n_kv: list[int] | None = [int(h) for h in raw_kv]
    elif raw_kv is not None and n_layers is not None:
        n_kv = [int(raw_kv)] * n_layers
    else:
        n_kv = None
    n_embd = _int(get(Keys.LLM.EMBEDDING_LENGTH))
    default_head = n_embd // n_heads if n_embd and n_heads else None
    head_k = _int(get(Keys.Attention.KEY_LENGTH)) or default_head
    head_v = _int(get(Keys.Attention.VALUE_LENGTH)) or default_head
    rope_dims = _int(header.get(keys.dimension_count)) or head_k
    reason = NO_ROPE_ARCHS.get(arch)
    split = None
    count = header.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if count is not None and int(count) > 1:
        split = SplitInfo(
            number=int(header.get(Keys.Split.LLM_KV_SPLIT_NO, 0)) + 1,
            count=int(count),
            tensors_total=_int(header.get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)),
        )
    base = header.get(keys.freq_base)
    return ModelInfo(
        header=header,
        architecture=arch,
        keys=keys,
        context_length=_int(header.get(keys.context_length)),
        freq_base=float(base) if base is not None else DEFAULT_FREQ_BASE,
        rope_dims=rope_dims,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        uses_rope=reason is None,
        no_rope_reason=reason,
        scaling=file_scaling(header, keys),
        split=split,
        yarn_cli_keys={k: f.value for k, f in header.fields.items() if k.startswith("yarn_cli.")},
    )


def info_dict(info: ModelInfo) -> dict[str, Any]:
    """A JSON-ready summary (``inspect --json``)."""
    header = info.header
    return {
        "file": {
            "path": str(header.path),
            "size": header.file_size,
            "gguf_version": header.version,
            "endianness": header.endianness,
            "alignment": header.alignment,
            "tensors": len(header.tensors),
            "split": None if info.split is None else {"number": info.split.number, "count": info.split.count},
        },
        "architecture": info.architecture,
        "uses_rope": info.uses_rope,
        "no_rope_reason": info.no_rope_reason,
        "context_length": info.context_length,
        "original_context": info.original_context,
        "rope": {"freq_base": info.freq_base, "dimension_count": info.rope_dims},
        "layers": info.n_layers,
        "heads": info.n_heads,
        "kv_heads": max(info.n_kv_heads) if info.n_kv_heads else None,
        "head_size": info.head_dim_k,
        "scaling": {
            "type": info.scaling.type,
            "factor": info.scaling.factor,
            "original_context": info.scaling.original_context,
            "attn_factor": info.scaling.attn_factor,
            "keys": {k: header.get(k) for k in info.keys.scaling if header.get(k) is not None},
        },
        "kv_cache_f16": [{"multiple": m, "context": ctx, "bytes": size} for m, ctx, size in info.kv_cache_table()],
        "yarn_cli": info.yarn_cli_keys or None,
    }
