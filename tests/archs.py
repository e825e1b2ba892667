"""Tiny random-weight GGUF models of several architectures that llama.cpp loads and runs.

Each ``_<arch>`` helper fills a :class:`_Model` with the architecture's hyperparameter keys and
tensors, sized after ``src/models/<arch>.cpp`` of the vendored llama.cpp (ggml shapes there are
``{ne0, ne1, ...}``; the numpy shapes here are the reverse). Every model has embedding 64, head
dimension 16 (RoPE over all 16 dimensions unless said otherwise), f32 weights drawn from a seeded
generator with scale 0.08, and the byte-level vocabulary of :mod:`ggufs`.

Sliding-window architectures get a 32-token window and both sliding-window and global layers, so
that a prompt of ~100 tokens exercises both kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from ggufs import N_VOCAB, add_vocab

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
SLIDING_WINDOW = 32
N_EXPERT = 4
N_EXPERT_USED = 2
N_FF_EXP = 32

U32 = GGUFValueType.UINT32
F32 = GGUFValueType.FLOAT32
BOOL = GGUFValueType.BOOL

KeyValues = dict[str, tuple[object, GGUFValueType]]


class _Model:
    """Keys (without the ``{arch}.`` prefix) and tensors of one model, in the order they are written."""

    def __init__(self, arch: str, rng: np.random.Generator) -> None:
        self.arch = arch
        self.rng = rng
        self.keys: KeyValues = {}
        self.rope_dims = HEAD_DIM
        self.tensors: dict[str, np.ndarray] = {}

    def u32(self, name: str, value: int) -> None:
        self.keys[name] = (value, U32)

    def f32(self, name: str, value: float) -> None:
        self.keys[name] = (value, F32)

    def flag(self, name: str, value: bool) -> None:
        self.keys[name] = (value, BOOL)

    def weight(self, name: str, *shape: int, scale: float = 0.08) -> None:
        self.tensors[name] = (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def ones(self, name: str, n: int) -> None:
        self.tensors[name] = np.ones(n, dtype=np.float32)

    def zeros(self, name: str, *shape: int) -> None:
        self.tensors[name] = np.zeros(shape, dtype=np.float32)

    def attention_keys(
        self, n_layer: int, *, n_head: int = N_HEAD, n_head_kv: int = N_HEAD_KV, n_ff: int = N_FF, rms: bool = True
    ) -> None:
        self.u32("embedding_length", N_EMBD)
        self.u32("block_count", n_layer)
        self.u32("feed_forward_length", n_ff)
        self.u32("attention.head_count", n_head)
        self.u32("attention.head_count_kv", n_head_kv)
        if rms:
            self.f32("attention.layer_norm_rms_epsilon", 1e-6)
        else:
            self.f32("attention.layer_norm_epsilon", 1e-5)

    def embeddings(self) -> None:
        self.weight("token_embd.weight", N_VOCAB, N_EMBD, scale=0.5)

    def head(self, *, tied: bool = False) -> None:
        self.ones("output_norm.weight", N_EMBD)
        if not tied:
            self.weight("output.weight", N_VOCAB, N_EMBD, scale=0.5)

    def qkvo(self, i: int, *, n_head_kv: int = N_HEAD_KV, bias: bool = False) -> None:
        """Separate ``attn_q``/``attn_k``/``attn_v`` (optionally with biases) and ``attn_output``."""
        blk = f"blk.{i}"
        kv = n_head_kv * HEAD_DIM
        self.weight(f"{blk}.attn_q.weight", N_HEAD * HEAD_DIM, N_EMBD)
        self.weight(f"{blk}.attn_k.weight", kv, N_EMBD)
        self.weight(f"{blk}.attn_v.weight", kv, N_EMBD)
        if bias:
            self.weight(f"{blk}.attn_q.bias", N_HEAD * HEAD_DIM)
            self.weight(f"{blk}.attn_k.bias", kv)
            self.weight(f"{blk}.attn_v.bias", kv)
        self.weight(f"{blk}.attn_output.weight", N_EMBD, N_HEAD * HEAD_DIM)

    def swiglu(self, i: int, *, n_ff: int = N_FF) -> None:
        self.weight(f"blk.{i}.ffn_gate.weight", n_ff, N_EMBD)
        self.weight(f"blk.{i}.ffn_down.weight", N_EMBD, n_ff)
        self.weight(f"blk.{i}.ffn_up.weight", n_ff, N_EMBD)

    def experts(self, i: int) -> None:
        """Router and stacked expert tensors (``ffn_*_exps``), ``N_EXPERT`` experts of width ``N_FF_EXP``."""
        blk = f"blk.{i}"
        self.weight(f"{blk}.ffn_gate_inp.weight", N_EXPERT, N_EMBD)
        self.weight(f"{blk}.ffn_gate_exps.weight", N_EXPERT, N_FF_EXP, N_EMBD)
        self.weight(f"{blk}.ffn_down_exps.weight", N_EXPERT, N_EMBD, N_FF_EXP)
        self.weight(f"{blk}.ffn_up_exps.weight", N_EXPERT, N_FF_EXP, N_EMBD)

    def moe_keys(self) -> None:
        self.u32("expert_count", N_EXPERT)
        self.u32("expert_used_count", N_EXPERT_USED)
        self.u32("expert_feed_forward_length", N_FF_EXP)

    def sliding_window(self, pattern: int | None) -> None:
        """A ``SLIDING_WINDOW``-token window; ``pattern`` n means every n-th layer is global."""
        self.u32("attention.sliding_window", SLIDING_WINDOW)
        if pattern is not None:
            self.u32("attention.sliding_window_pattern", pattern)


def _llama_like(m: _Model, n_layer: int = 2) -> None:
    m.attention_keys(n_layer)
    m.embeddings()
    for i in range(n_layer):
        m.ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        m.qkvo(i)
        m.ones(f"blk.{i}.ffn_norm.weight", N_EMBD)
        m.swiglu(i)
    m.head()


def _llama(m: _Model) -> None:
    """Llama: 2 layers, GQA 4/2, no sliding window.

    Loads an optional ``rope_freqs.weight`` (Llama 3.1 style per-dimension factors, length 8) or, when
    ``llama.rope.scaling.type`` is ``longrope``, ``rope_factors_long/short.weight``; a test passes them.
    """
    _llama_like(m)


def _mistral3(m: _Model) -> None:
    """Mistral 3 (Ministral/Magistral): llama layout, 2 layers, no sliding window.

    llama.cpp also reads ``mistral3.rope.scaling.yarn_beta_fast/slow``, ``yarn_log_multiplier`` and
    ``attention.temperature_scale`` (which needs ``rope.scaling.original_context_length``), none written here.
    """
    _llama_like(m)


def _granite(m: _Model) -> None:
    """Granite 3: llama layout, 2 layers, plus the required ``logit_scale`` and the residual, embedding and
    attention multipliers. RoPE is applied unless ``granite.rope.scaling.finetuned`` is false."""
    _llama_like(m)
    m.f32("logit_scale", 8.0)
    m.f32("residual_scale", 0.22)
    m.f32("embedding_scale", 12.0)
    m.f32("attention.scale", 1.0 / HEAD_DIM)


def _decoder(m: _Model, *, bias: bool = False, qk_norm: bool = False, moe: bool = False) -> None:
    """Two pre-norm layers: attention (optionally with q/k/v biases, per-head q/k RMS norms), then SwiGLU or experts."""
    m.attention_keys(2)
    if moe:
        m.moe_keys()
    m.embeddings()
    for i in range(2):
        m.ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        m.qkvo(i, bias=bias)
        if qk_norm:
            m.ones(f"blk.{i}.attn_q_norm.weight", HEAD_DIM)
            m.ones(f"blk.{i}.attn_k_norm.weight", HEAD_DIM)
        m.ones(f"blk.{i}.ffn_norm.weight", N_EMBD)
        if moe:
            m.experts(i)
        else:
            m.swiglu(i)
    m.head()


def _qwen2(m: _Model) -> None:
    """Qwen2 / Qwen2.5: 2 layers, biases on q/k/v, no sliding window."""
    _decoder(m, bias=True)


def _qwen3(m: _Model) -> None:
    """Qwen3: 2 layers, per-head RMS norms on q and k (``attn_q_norm``/``attn_k_norm``), no biases."""
    _decoder(m, qk_norm=True)


def _qwen3moe(m: _Model) -> None:
    """Qwen3 MoE: Qwen3 attention (q/k norms) and 4 experts, 2 used, of width 32 in both layers."""
    _decoder(m, qk_norm=True, moe=True)


def _gemma_layers(m: _Model, *, qk_norm: bool) -> None:
    """Gemma's two layers: norms after attention and after the FFN too, q/k norms from Gemma 3 on; output tied."""
    m.embeddings()
    for i in range(2):
        m.ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        m.qkvo(i)
        if qk_norm:
            m.ones(f"blk.{i}.attn_q_norm.weight", HEAD_DIM)
            m.ones(f"blk.{i}.attn_k_norm.weight", HEAD_DIM)
        m.ones(f"blk.{i}.post_attention_norm.weight", N_EMBD)
        m.ones(f"blk.{i}.ffn_norm.weight", N_EMBD)
        m.swiglu(i)
        m.ones(f"blk.{i}.post_ffw_norm.weight", N_EMBD)
    m.head(tied=True)


def _gemma2(m: _Model) -> None:
    """Gemma 2: 2 layers, the default pattern 2 makes layer 0 sliding-window (32 tokens) and layer 1 global.

    Post-attention and post-FFN norms, attention and final logit soft-capping, output tied to the
    embeddings. Sliding-window layers use the file's RoPE scale (``rope_freq_scale_train_swa``).
    """
    m.attention_keys(2)
    m.sliding_window(None)
    m.f32("attn_logit_softcapping", 50.0)
    m.f32("final_logit_softcapping", 30.0)
    _gemma_layers(m, qk_norm=False)


def _gemma3(m: _Model) -> None:
    """Gemma 3: 2 layers; ``sliding_window`` 32 and ``sliding_window_pattern`` 2 make layer 0 sliding-window
    and layer 1 global (llama.cpp's default pattern is 6, which 2 layers would never reach).

    Gemma 2 layout plus q/k norms; output tied. Sliding-window layers keep RoPE scale 1 and the base
    ``gemma3.rope.freq_base_swa`` (default 10000); only the global layers see the file's scaling.
    """
    m.attention_keys(2)
    m.sliding_window(2)
    _gemma_layers(m, qk_norm=True)


def _phi3(m: _Model) -> None:
    """Phi-3: 2 layers, fused ``attn_qkv`` and fused gate+up ``ffn_up`` (2 x 128 rows), NEOX RoPE.

    Takes optional ``rope_factors_long/short.weight`` (length 8, LongRoPE as in Phi-3-128k files, with
    ``phi3.rope.scaling.original_context_length`` and ``phi3.rope.scaling.attn_factor``): llama.cpp picks the
    long factors when the context exceeds the original length. No sliding window (llama.cpp ignores Phi's).
    """
    m.attention_keys(2)
    m.embeddings()
    qkv = N_EMBD + 2 * N_HEAD_KV * HEAD_DIM
    for i in range(2):
        m.ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        m.weight(f"blk.{i}.attn_qkv.weight", qkv, N_EMBD)
        m.weight(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD)
        m.ones(f"blk.{i}.ffn_norm.weight", N_EMBD)
        m.weight(f"blk.{i}.ffn_up.weight", 2 * N_FF, N_EMBD)
        m.weight(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    m.head()


def _deepseek2(m: _Model) -> None:
    """DeepSeek-V2/V3 with MLA, as current convert_hf_to_gguf writes it: q_lora_rank 32, kv_lora_rank 32,
    qk_nope 16 + qk_rope 16 (``rope.dimension_count`` 16), v_head 16, MQA over the compressed cache
    (``head_count_kv`` 1, ``key_length`` 48, ``value_length`` 32) and split ``attn_k_b``/``attn_v_b``.

    Layer 0 is dense (``leading_dense_block_count`` 1), layer 1 is MoE with 4 routed experts (2 used,
    sigmoid gating with ``exp_probs_b``, normalised weights) and 1 shared expert. Accepts
    ``deepseek2.rope.scaling.yarn_log_multiplier`` (llama.cpp divides it by 0.1) among the yarn keys.
    """
    q_lora, kv_lora, nope, rope, v_dim = 32, 32, 16, 16, 16
    m.rope_dims = rope
    m.attention_keys(2, n_head_kv=1)
    m.u32("attention.key_length", kv_lora + rope)
    m.u32("attention.value_length", kv_lora)
    m.u32("attention.key_length_mla", nope + rope)
    m.u32("attention.value_length_mla", v_dim)
    m.u32("attention.q_lora_rank", q_lora)
    m.u32("attention.kv_lora_rank", kv_lora)
    m.u32("leading_dense_block_count", 1)
    m.moe_keys()
    m.u32("expert_shared_count", 1)
    m.f32("expert_weights_scale", 2.5)
    m.flag("expert_weights_norm", True)
    m.u32("expert_gating_func", 2)  # sigmoid
    m.embeddings()
    for i in range(2):
        blk = f"blk.{i}"
        m.ones(f"{blk}.attn_norm.weight", N_EMBD)
        m.ones(f"{blk}.attn_q_a_norm.weight", q_lora)
        m.ones(f"{blk}.attn_kv_a_norm.weight", kv_lora)
        m.weight(f"{blk}.attn_q_a.weight", q_lora, N_EMBD)
        m.weight(f"{blk}.attn_q_b.weight", N_HEAD * (nope + rope), q_lora)
        m.weight(f"{blk}.attn_kv_a_mqa.weight", kv_lora + rope, N_EMBD)
        m.weight(f"{blk}.attn_k_b.weight", N_HEAD, kv_lora, nope)
        m.weight(f"{blk}.attn_v_b.weight", N_HEAD, v_dim, kv_lora)
        m.weight(f"{blk}.attn_output.weight", N_EMBD, N_HEAD * v_dim)
        m.ones(f"{blk}.ffn_norm.weight", N_EMBD)
        if i == 0:
            m.swiglu(i)
        else:
            m.experts(i)
            m.zeros(f"{blk}.exp_probs_b.bias", N_EXPERT)
            m.weight(f"{blk}.ffn_gate_shexp.weight", N_FF_EXP, N_EMBD)
            m.weight(f"{blk}.ffn_down_shexp.weight", N_EMBD, N_FF_EXP)
            m.weight(f"{blk}.ffn_up_shexp.weight", N_FF_EXP, N_EMBD)
    m.head()


def _gpt_oss(m: _Model) -> None:
    """gpt-oss (llama.cpp's OPENAI_MOE): 2 layers, the default pattern 2 makes layer 0 sliding-window
    (32 tokens) and layer 1 global; sliding-window layers use the file's RoPE scale too.

    Biased q/k/v/o, per-head attention sinks, ``post_attention_norm`` as the FFN norm, and 4 biased
    experts (2 used, width 32) with no dense FFN.
    """
    m.attention_keys(2)
    m.moe_keys()
    m.sliding_window(None)
    m.embeddings()
    for i in range(2):
        blk = f"blk.{i}"
        m.ones(f"{blk}.attn_norm.weight", N_EMBD)
        m.qkvo(i, bias=True)
        m.weight(f"{blk}.attn_output.bias", N_EMBD)
        m.weight(f"{blk}.attn_sinks.weight", N_HEAD)
        m.ones(f"{blk}.post_attention_norm.weight", N_EMBD)
        m.experts(i)
        m.weight(f"{blk}.ffn_gate_inp.bias", N_EXPERT)
        m.weight(f"{blk}.ffn_gate_exps.bias", N_EXPERT, N_FF_EXP)
        m.weight(f"{blk}.ffn_down_exps.bias", N_EXPERT, N_EMBD)
        m.weight(f"{blk}.ffn_up_exps.bias", N_EXPERT, N_FF_EXP)
    m.head()


def _olmo2(m: _Model) -> None:
    """OLMo 2 layout with OLMo 3's sliding window: 4 layers, pattern 4 makes layers 0-2 sliding-window
    (32 tokens) and layer 3 global. Sliding-window layers get plain RoPE (scale 1, no YaRN).

    No pre-norms: q/k norms over the whole projection, post-attention and post-FFN norms.
    """
    m.attention_keys(4)
    m.sliding_window(4)
    m.embeddings()
    for i in range(4):
        m.qkvo(i)
        m.ones(f"blk.{i}.attn_q_norm.weight", N_EMBD)
        m.ones(f"blk.{i}.attn_k_norm.weight", N_HEAD_KV * HEAD_DIM)
        m.ones(f"blk.{i}.post_attention_norm.weight", N_EMBD)
        m.swiglu(i)
        m.ones(f"blk.{i}.post_ffw_norm.weight", N_EMBD)
    m.head()


def _cohere2(m: _Model) -> None:
    """Command R7B (cohere2): 4 layers, pattern 4 makes layers 0-2 sliding-window (32 tokens) with RoPE and
    layer 3 global *without* positional encoding (NoPE).

    Parallel attention and FFN after one LayerNorm (no bias), ``logit_scale`` (required), output tied.
    """
    m.attention_keys(4, rms=False)
    m.sliding_window(4)
    m.f32("logit_scale", 0.25)
    m.embeddings()
    for i in range(4):
        m.ones(f"blk.{i}.attn_norm.weight", N_EMBD)
        m.qkvo(i)
        m.swiglu(i)
    m.head(tied=True)


_BUILDERS: dict[str, Callable[[_Model], None]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen3moe": _qwen3moe,
    "mistral3": _mistral3,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "phi3": _phi3,
    "deepseek2": _deepseek2,
    "gpt-oss": _gpt_oss,
    "olmo2": _olmo2,
    "granite": _granite,
    "cohere2": _cohere2,
}

ARCHS: tuple[str, ...] = tuple(_BUILDERS)


def write_tiny(
    path: Path,
    arch: str,
    *,
    context_length: int = 256,
    freq_base: float = 10000.0,
    extra: KeyValues | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight ``arch`` model to ``path`` and return ``path``.

    The header holds ``{arch}.context_length`` and the architecture's other keys, then
    ``{arch}.rope.dimension_count`` and ``{arch}.rope.freq_base``, then the ``extra`` keys (where real files
    keep their scaling keys; an extra key replaces a default of the same name), then the tokenizer.
    ``tensors`` are added before the model's own (as ``rope_freqs.weight`` is in real files) or replace
    one of the same name.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unsupported architecture {arch!r}; choose one of {ARCHS}")
    extra = extra or {}
    m = _Model(arch, np.random.default_rng(seed))
    _BUILDERS[arch](m)

    keys: KeyValues = {f"{arch}.context_length": (context_length, U32)}
    keys.update({f"{arch}.{name}": kv for name, kv in m.keys.items()})
    keys[f"{arch}.rope.dimension_count"] = (m.rope_dims, U32)
    keys[f"{arch}.rope.freq_base"] = (freq_base, F32)
    keys = {name: kv for name, kv in keys.items() if name not in extra}
    keys.update(extra)

    writer = GGUFWriter(path, arch)
    # not "phi3": llama.cpp's vocabulary loader treats a model named Phi-3 specially and then needs a
    # "<|endoftext|>" token, which the byte-level test vocabulary lacks
    writer.add_name(f"tiny-test-{arch.replace('phi3', 'phi')}")
    for name, (value, vtype) in keys.items():
        writer.add_key_value(name, value, vtype)
    writer.add_uint32("general.file_type", 0)
    add_vocab(writer)

    added = tensors or {}
    all_tensors = {name: data for name, data in added.items() if name not in m.tensors}
    all_tensors.update({name: added.get(name, data) for name, data in m.tensors.items()})
    for name, data in all_tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
