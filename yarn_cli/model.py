"""Opening a model: the one step every command takes before it does anything with a GGUF file.

Resolve the name (``default`` is the embedded SmolLM2), refuse a file whose in-place change
was cut short, read the header once, and derive the model's shape and RoPE state from it.
Defaults mirror llama.cpp's loader (``llama_model::load_hparams``), so the figures are the
ones llama.cpp will use, not just what the file spells out.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import Keys

from yarn_cli.default_model import resolve_model
from yarn_cli.errors import InputError, NotGGUFError
from yarn_cli.gguf.file_type import FileType, file_type
from yarn_cli.gguf.header import GGUFHeader, TensorRecord, read_header
from yarn_cli.gguf.inplace import check_not_pending
from yarn_cli.gguf.splits import parse_split_name, split_paths
from yarn_cli.gguf.tokenizer import TokenizerInfo, read_tokenizer
from yarn_cli.gguf.values import DamagedValueError, as_count
from yarn_cli.rope.architectures import window_layers, window_scaling
from yarn_cli.rope.keys import arch_key
from yarn_cli.rope.state import RopeState, rope_state

KV_CACHE_MULTIPLES = (1, 2, 4, 8)
DEFAULT_UBATCH = 512  # llama.cpp's n_ubatch
F16_BYTES = 2


@dataclass(frozen=True)
class SplitInfo:
    number: int  # 1-based, as in the file name
    count: int


@dataclass(frozen=True)
class Shape:
    """What sizes the KV cache: layers, heads and head sizes."""

    n_layers: int | None
    n_heads: int | None
    n_kv_heads: int | None  # the most any layer has
    kv_heads_total: int | None  # summed over the layers: what the KV cache holds per position
    head_dim_k: int | None
    head_dim_v: int | None
    window: int | None = None  # sliding-window size, in tokens
    window_layers: int | None = None  # how many layers are windowed (None: unknown or none)

    def kv_cache_bytes(self, n_ctx: int) -> int | None:
        """f16 K and V cache for ``n_ctx`` positions in every layer (llama.cpp's default cache type).

        That is also what llama-cpp-python allocates for sliding-window layers ("full-size SWA
        cache"), and what yarn-cli uses (see ``windowed_kv_cache_bytes``).
        """
        if self.kv_heads_total is None or self.head_dim_k is None or self.head_dim_v is None:
            return None
        return self.kv_heads_total * (self.head_dim_k + self.head_dim_v) * n_ctx * F16_BYTES

    def windowed_kv_cache_bytes(self, n_ctx: int, n_ubatch: int = DEFAULT_UBATCH) -> int | None:
        """The same with the windowed layers keeping only their window (llama-server's default, ``--swa-full`` off).

        llama.cpp sizes their cache at the window plus one micro-batch, rounded up to 256 cells.
        """
        full = self.kv_cache_bytes(n_ctx)
        if full is None or not self.window or not self.window_layers or not self.n_layers:
            return None
        cells = min(n_ctx, -(-(self.window + n_ubatch) // 256) * 256)
        share = self.window_layers / self.n_layers
        return round(full * (1 - share) + full * share * cells / n_ctx)


@dataclass(frozen=True)
class Compute:
    """What a token costs the model, counted from its tensors: how a measured speed grows with the context.

    A prompt token costs about 2 flops per weight it is multiplied with, plus attention's, which grow
    with the tokens before it; a generated token reads every weight, plus the KV cache, which grows too.
    """

    matmul_params: int  # weights a token is multiplied with: every matrix but the token embedding (a lookup)
    output_params: int  # of which the output projection's, which a prompt needs only for its last token
    weight_bytes: int  # the tensor data a generated token reads
    attention_flops: int  # attention's flops (QK and AV, every layer and head) per token for each token before it

    @property
    def prompt_growth(self) -> float:
        """A prompt token's extra cost per token before it, as a share of its cost at the start."""
        body = self.matmul_params - self.output_params
        return self.attention_flops / (2 * body) if body > 0 else 0.0

    @property
    def scoring_factor(self) -> float:
        """A token whose logits are all wanted (perplexity) over one whose are not: the output layer each time."""
        body = self.matmul_params - self.output_params
        return self.matmul_params / body if body > 0 else 1.0


@dataclass(frozen=True)
class Model:
    """A model file, its header read once: shape and RoPE state as llama.cpp will see them."""

    header: GGUFHeader
    architecture: str
    shape: Shape
    rope: RopeState
    split: SplitInfo | None

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def context_length(self) -> int | None:
        return self.rope.current.context_length

    @property
    def original_context(self) -> int | None:
        """The context the model was trained with, before any scaling (yarn-cli's or its own)."""
        return self.rope.trained_context

    @property
    def tokenizer(self) -> TokenizerInfo:
        """Its tokenizer as the file states it (read when asked: only ``inspect`` shows it)."""
        try:
            return read_tokenizer(self.header)
        except DamagedValueError as exc:
            raise exc.at(self.path) from None

    @property
    def file_type(self) -> FileType | None:
        """Its quantization, as ``general.file_type`` states it."""
        try:
            return file_type(self.header)
        except DamagedValueError as exc:
            raise exc.at(self.path) from None

    def record(self) -> dict[str, Any]:
        """The model as a run's record names it; ``header_sha256`` tells it apart from any other file or state."""
        rope = self.rope
        return {
            "path": str(self.path),
            "size": self.header.file_size,
            "architecture": self.architecture,
            "header_sha256": self.header.fingerprint(),
            "context_length": self.context_length,
            "original_context": self.original_context,
            "rope": {
                "freq_base": rope.current.freq_base,
                "scaling": rope.describe_scaling(),
                "converted_by_yarn_cli": rope.converted,
            },
        }

    @property
    def compute(self) -> Compute:
        """The token costs its tensors imply.

        A mixture of experts' expert tensors count for the experts a token uses (``expert_used_count`` of
        ``expert_count``). A split model's tensors are read from every split beside the first; where one
        cannot be read, the layers of those that could stand for all of them.
        """
        header = self.header
        tensors, complete = self._tensors_of_every_split()
        names = {t.name for t in tensors}
        counts = [as_count(key, header.get(arch_key(key, self.architecture))) for key in
                  (Keys.LLM.EXPERT_USED_COUNT, Keys.LLM.EXPERT_COUNT)]  # fmt: skip
        experts = counts[0] / counts[1] if counts[0] and counts[1] else 1.0
        tied = "output.weight" not in names and complete  # the token embedding is the output projection too
        blocks: set[str] = set()
        block_params = block_bytes = other_params = other_bytes = output = 0
        for t in tensors:
            in_block = t.name.startswith("blk.")
            if in_block:
                blocks.add(t.name.split(".")[1])
            size = math.prod(t.shape) if len(t.shape) >= 2 and t.name.endswith(".weight") else 0
            if "_exps." in t.name:
                size = round(size * experts)
            if t.name == "output.weight" or (t.name == "token_embd.weight" and "output.weight" not in names):
                output = size  # where output.weight was not read, as large as the token embedding
            if t.name == "token_embd.weight" and not tied:
                size = 0  # a lookup
            if in_block:
                block_params, block_bytes = block_params + size, block_bytes + t.n_bytes
            else:
                other_params, other_bytes = other_params + size, other_bytes + t.n_bytes
        layers = self.shape.n_layers
        scale = layers / len(blocks) if not complete and layers and blocks else 1.0
        unread_output = output if not complete and "output.weight" not in names else 0
        matmul = round(block_params * scale) + other_params + unread_output
        shape = self.shape
        per_head = (shape.head_dim_k or 0) + (shape.head_dim_v or 0)
        attention = 2 * (shape.n_layers or 0) * (shape.n_heads or 0) * per_head
        return Compute(matmul, output, round(block_bytes * scale) + other_bytes, attention)

    def _tensors_of_every_split(self) -> tuple[list[TensorRecord], bool]:
        """The tensor records of every split (llama.cpp reads the first one's metadata, every one's tensors), and
        whether all could be read."""
        tensors = list(self.header.tensors)
        parsed = parse_split_name(self.path)
        if self.split is None or parsed is None:
            return tensors, self.split is None
        prefix, _, count = parsed
        for path in split_paths(self.path.parent, prefix, count)[1:]:
            try:
                tensors += read_header(path).tensors
            except (OSError, NotGGUFError):
                return tensors, False
        return tensors, True

    def kv_cache_table(self) -> list[tuple[int, int, int | None, int | None]]:
        """(multiple, context, bytes, bytes with windowed sliding-window layers) at 1x/2x/4x/8x the native context."""
        base = self.original_context
        if not base:
            return []
        return [
            (m, base * m, self.shape.kv_cache_bytes(base * m), self.shape.windowed_kv_cache_bytes(base * m))
            for m in KV_CACHE_MULTIPLES
        ]


def open_model(model: str | os.PathLike[str] | None, *, pending_ok: bool = False) -> Model:
    """A user's MODEL argument (a path, or None / ``default`` for the embedded model), opened.

    A file whose in-place change was cut short (or is under way) is refused, unless ``pending_ok``:
    its header may be half-written.
    """
    path = resolve_model(model)
    if not pending_ok:
        check_not_pending(path)
    return describe(read_header(path))


# Far above any real model's head size (a few hundred); a larger count is a damaged header.
MAX_ROTARY_DIMS = 65536


def _rotary_dims(header: GGUFHeader, arch: str, dims: int | None) -> int | None:
    if dims is not None and not 0 < dims <= MAX_ROTARY_DIMS:
        raise NotGGUFError(
            f"{header.path}: {arch}.rope.dimension_count (or the head size it defaults to) is {dims:,}, which no "
            "model has; the header is corrupt"
        )
    return dims


def describe(header: GGUFHeader) -> Model:
    """The model a header describes; a file that is no model (or a later split) is one clear error.

    So is a key whose value its meaning rules out (text for a count, a NaN context length...): one
    line naming the file, the key and the value.
    """
    try:
        return _describe(header)
    except DamagedValueError as exc:
        raise exc.at(header.path) from None


def _describe(header: GGUFHeader) -> Model:
    arch = header.architecture

    def count(key: str, *, per_layer: bool = False) -> int | None:
        return as_count(key, header.get(key), per_layer=per_layer)

    split_count = count(Keys.Split.LLM_KV_SPLIT_COUNT)
    split_number = (count(Keys.Split.LLM_KV_SPLIT_NO) or 0) + 1
    if arch is None and split_count is not None:
        raise InputError(
            f"{header.path} is split {split_number} of {split_count} and holds no model metadata; "
            f"pass the first split (its name ends in -00001-of-{split_count:05d}.gguf)"
        )
    if arch is None:
        raise NotGGUFError(f"{header.path} has no general.architecture key; it is not a model file")

    def of_arch(template: str, *, per_layer: bool = False) -> int | None:
        return count(arch_key(template, arch), per_layer=per_layer)

    n_layers = of_arch(Keys.LLM.BLOCK_COUNT)
    n_heads = of_arch(Keys.Attention.HEAD_COUNT, per_layer=True)
    kv_key = arch_key(Keys.Attention.HEAD_COUNT_KV, arch)
    if header.get(kv_key) is None:
        kv_key = arch_key(Keys.Attention.HEAD_COUNT, arch)  # llama.cpp: n_head_kv defaults to n_head
    raw_kv = header.get(kv_key)
    n_kv = count(kv_key, per_layer=True)
    if isinstance(raw_kv, list):  # per layer (a few architectures)
        kv_total: int | None = sum(as_count(kv_key, h) or 0 for h in raw_kv)
    elif n_kv is not None and n_layers is not None:  # the same in every layer
        kv_total = n_kv * n_layers
    else:
        kv_total = None
    n_embd = of_arch(Keys.LLM.EMBEDDING_LENGTH)
    default_head = n_embd // n_heads if n_embd and n_heads else None
    head_k = of_arch(Keys.Attention.KEY_LENGTH) or default_head
    head_v = of_arch(Keys.Attention.VALUE_LENGTH) or default_head
    split = None
    if split_count is not None and split_count > 1:
        split = SplitInfo(number=split_number, count=split_count)
    rope = rope_state(header, arch, _rotary_dims(header, arch, of_arch(Keys.Rope.DIMENSION_COUNT) or head_k))
    window = rope.window
    pattern = header.get(arch_key(Keys.Attention.SLIDING_WINDOW_PATTERN, arch))
    windowed = window_layers(arch, n_layers, pattern) if window and n_layers else None
    return Model(
        header=header,
        architecture=arch,
        shape=Shape(n_layers, n_heads, n_kv, kv_total, head_k, head_v, window, windowed),
        rope=rope,
        split=split,
    )


def summary(model: Model) -> dict[str, Any]:
    """A JSON-ready summary (``inspect --json``)."""
    # what inspect shows beyond the model itself: imported here, so that a chat's start-up does without them
    from yarn_cli.rope.explain import explain, scaling_origin
    from yarn_cli.rope.huggingface import hf_scaling
    from yarn_cli.rope.runtimes import runtime_report

    header = model.header
    rope = model.rope
    scaling = rope.current.scaling
    yarn_cli_keys = {k: f.value for k, f in header.fields.items() if k.startswith("yarn_cli.")}
    report = runtime_report(rope)
    quantization = model.file_type
    return {
        "file": {
            "path": str(header.path),
            "size": header.file_size,
            "gguf_version": header.version,
            "endianness": header.endianness,
            "alignment": header.alignment,
            "tensors": len(header.tensors),
            "split": None if model.split is None else {"number": model.split.number, "count": model.split.count},
        },
        "architecture": model.architecture,
        "quantization": None if quantization is None else quantization.to_dict(),
        "tokenizer": model.tokenizer.to_dict(),
        "uses_rope": rope.uses_rope,
        "no_rope_reason": rope.no_rope_reason,
        "context_length": model.context_length,
        "original_context": model.original_context,
        "rope": {
            "freq_base": rope.current.freq_base,
            "dimension_count": rope.dims,
            "freq_base_swa": rope.freq_base_swa,
            "sliding_window": rope.window,
            "window_scaling": window_scaling(rope.architecture).name.lower(),
            "factor_tensors": rope.factor_tensor_names,
            "yarn_log_multiplier": rope.yarn_log_multiplier,
            "llama_cpp": explain(rope),
            "hugging_face": hf_scaling(rope, model.shape.head_dim_k).to_dict(),
        },
        "layers": model.shape.n_layers,
        "heads": model.shape.n_heads,
        "kv_heads": model.shape.n_kv_heads,
        "head_size": model.shape.head_dim_k,
        "scaling": {
            "type": scaling.type,
            "factor": scaling.factor,
            "original_context": scaling.original_context,
            "attn_factor": scaling.attn_factor,
            "origin": scaling_origin(rope),
            "keys": {k: header.get(k) for k in rope.keys.scaling if header.get(k) is not None},
        },
        "runtimes": None if report is None else report.to_dict(),  # where that scaling takes effect
        "sliding_window_layers": model.shape.window_layers,
        "kv_cache_f16": [
            {"multiple": m, "context": ctx, "bytes": size, "bytes_windowed": windowed}
            for m, ctx, size, windowed in model.kv_cache_table()
        ],
        "yarn_cli": yarn_cli_keys or None,
    }
