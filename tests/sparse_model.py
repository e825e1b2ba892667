"""A GGUF with a 7B model's real shapes and no weights: the header written with gguf, the data a hole.

The shapes are Qwen2.5-7B's (DeepSeek-R1-Distill-Qwen-7B's): qwen2, 28 layers, embedding 3584,
feed-forward 18944, 28 heads and 4 KV heads of 128 dimensions, a 152,064-token vocabulary and a
131,072-token context, every matrix Q4_K as in a Q4_K_M file (4.3 GB). The tensor data is never
written, so the file takes a few MB of disk; llama.cpp maps it and runs it for real (every weight
is zero, so the model says nothing useful), with a 7B's KV cache, compute buffers and speed. That is
what the tests need of it: chat's and the evaluations' choices of context and memory at full size,
without a full-size download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.constants import GGML_QUANT_SIZES

ARCH = "qwen2"
N_LAYER = 28
N_EMBD = 3584
N_FF = 18944
N_HEAD = 28
N_HEAD_KV = 4
HEAD_DIM = N_EMBD // N_HEAD
N_VOCAB = 152064
CONTEXT = 131072
ALIGNMENT = 32

# ChatML, as Qwen's files carry it: a chat formats a prompt into a few dozen tokens, as a real one does.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vocabulary() -> tuple[list[str], list[int]]:
    """A SentencePiece-style vocabulary of the real size: specials, the 256 bytes, then filler words."""
    tokens = ["<unk>", "<|im_start|>", "<|im_end|>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    filler = N_VOCAB - len(tokens)
    tokens += [f"▁w{i}" for i in range(filler)]
    types += [TokenType.NORMAL] * filler
    return tokens, [int(t) for t in types]


def _tensors() -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """Name, numpy-order shape and type of every tensor qwen2 loads."""
    q4k, f32 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.F32
    kv = N_HEAD_KV * HEAD_DIM
    tensors = [("token_embd.weight", (N_VOCAB, N_EMBD), q4k)]
    for i in range(N_LAYER):
        b = f"blk.{i}"
        tensors += [
            (f"{b}.attn_norm.weight", (N_EMBD,), f32),
            (f"{b}.attn_q.weight", (N_EMBD, N_EMBD), q4k),
            (f"{b}.attn_q.bias", (N_EMBD,), f32),
            (f"{b}.attn_k.weight", (kv, N_EMBD), q4k),
            (f"{b}.attn_k.bias", (kv,), f32),
            (f"{b}.attn_v.weight", (kv, N_EMBD), q4k),
            (f"{b}.attn_v.bias", (kv,), f32),
            (f"{b}.attn_output.weight", (N_EMBD, N_EMBD), q4k),
            (f"{b}.ffn_norm.weight", (N_EMBD,), f32),
            (f"{b}.ffn_gate.weight", (N_FF, N_EMBD), q4k),
            (f"{b}.ffn_up.weight", (N_FF, N_EMBD), q4k),
            (f"{b}.ffn_down.weight", (N_EMBD, N_FF), q4k),
        ]
    tensors += [("output_norm.weight", (N_EMBD,), f32), ("output.weight", (N_VOCAB, N_EMBD), q4k)]
    return tensors


def _nbytes(shape: tuple[int, ...], kind: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[kind]
    return int(np.prod(shape)) // block * size


def write_7b_shaped(path: Path, *, context_length: int = CONTEXT) -> Path:
    """Write the 7B-shaped file at ``path``: a real header, the tensor data a hole of the real size."""
    writer = GGUFWriter(path, ARCH)
    writer.add_name("sparse-7b-shaped")
    writer.add_uint32(f"{ARCH}.context_length", context_length)
    writer.add_uint32(f"{ARCH}.embedding_length", N_EMBD)
    writer.add_uint32(f"{ARCH}.block_count", N_LAYER)
    writer.add_uint32(f"{ARCH}.feed_forward_length", N_FF)
    writer.add_uint32(f"{ARCH}.attention.head_count", N_HEAD)
    writer.add_uint32(f"{ARCH}.attention.head_count_kv", N_HEAD_KV)
    writer.add_float32(f"{ARCH}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{ARCH}.rope.freq_base", 1_000_000.0)
    writer.add_uint32("general.file_type", 15)  # MOSTLY_Q4_K_M
    tokens, types = _vocabulary()
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", [0.0] * len(tokens))
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_string("tokenizer.chat_template", CHAT_TEMPLATE)
    data = 0
    for name, shape, kind in _tensors():
        nbytes = _nbytes(shape, kind)
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=kind)
        data += nbytes + (-nbytes % ALIGNMENT)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as fh:
        header_end = fh.seek(0, 2)
        fh.truncate(header_end + (-header_end % ALIGNMENT) + data)
    return path


def weights_bytes() -> int:
    """The tensor data's size, as a Q4_K_M 7B's (about 4.3 GB)."""
    return sum(_nbytes(shape, kind) for _, shape, kind in _tensors())
