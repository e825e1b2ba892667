"""Tiny but real GGUF models for the tests, written with gguf-py's GGUFWriter.

The llama-architecture model loads in llama.cpp (random weights, a byte-level
SentencePiece-style vocabulary), so conversions can be checked end to end in
milliseconds. Everything is seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFEndian, GGUFValueType, GGUFWriter, TokenType

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
CONTEXT = 256
FREQ_BASE = 10000.0
HEAD_DIM = N_EMBD // N_HEAD


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["▁the", "▁a", "▁and", "▁of", "▁to", "▁in", "▁is", "▁it"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * 8
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


N_VOCAB = len(_vocab()[0])


def add_vocab(writer: GGUFWriter) -> None:
    """The byte-level SentencePiece-style vocabulary every tiny model uses."""
    tokens, scores, types = _vocab()
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", scores)
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)


def write_tiny_llama(
    path: Path,
    *,
    arch: str = "llama",
    context_length: int | None = CONTEXT,
    freq_base: float | None = FREQ_BASE,
    extra: dict[str, tuple[object, GGUFValueType]] | None = None,
    endianess: GGUFEndian = GGUFEndian.LITTLE,
    split_max_tensors: int = 0,
    seed: int = 0,
    pad_mib: int = 0,
    extra_with_rope: bool = False,
) -> Path:
    """Write a 2-layer llama-style model; ``extra`` adds or overrides metadata keys.

    The extra keys go last, or with ``extra_with_rope`` right after the RoPE keys, where real files
    keep their scaling keys (not at the end of the header, where a key put back lands anyway).

    ``pad_mib`` adds a large unused tensor, to make files of a chosen size (llama.cpp then
    refuses the extra tensor, so such files are for file-handling tests only).
    Returns the path of the (first) file written.
    """
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(path, arch, endianess=endianess, split_max_tensors=split_max_tensors)
    writer.add_name("tiny-test-llama")
    if context_length is not None:
        writer.add_uint32(f"{arch}.context_length", context_length)
    writer.add_uint32(f"{arch}.embedding_length", N_EMBD)
    writer.add_uint32(f"{arch}.block_count", N_LAYER)
    writer.add_uint32(f"{arch}.feed_forward_length", N_FF)
    writer.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    writer.add_uint32(f"{arch}.attention.head_count_kv", N_HEAD_KV)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    if freq_base is not None:
        writer.add_float32(f"{arch}.rope.freq_base", freq_base)
    if extra_with_rope:
        for key, (value, vtype) in (extra or {}).items():
            writer.add_key_value(key, value, vtype)
    writer.add_uint32("general.file_type", 0)
    add_vocab(writer)
    if not extra_with_rope:
        for key, (value, vtype) in (extra or {}).items():
            writer.add_key_value(key, value, vtype)

    def weight(*shape: int, scale: float = 0.08) -> np.ndarray:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        return data.byteswap() if endianess == GGUFEndian.BIG else data

    def ones(n: int) -> np.ndarray:
        data = np.ones(n, dtype=np.float32)
        return data.byteswap() if endianess == GGUFEndian.BIG else data

    writer.add_tensor("token_embd.weight", weight(N_VOCAB, N_EMBD, scale=0.5))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(N_HEAD_KV * HEAD_DIM, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
    writer.add_tensor("output_norm.weight", ones(N_EMBD))
    writer.add_tensor("output.weight", weight(N_VOCAB, N_EMBD, scale=0.5))
    if pad_mib:
        writer.add_tensor("padding.weight", np.zeros(pad_mib * 2**20, dtype=np.int8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(Path(path))[0]


def write_sparse_gguf(path: Path, data_bytes: int) -> Path:
    """A llama-metadata GGUF whose one tensor is ``data_bytes`` long and never written (a sparse file).

    It takes no disk space, so tests can ask for outputs larger than the free space.
    """
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("llama.context_length", CONTEXT)
    writer.add_uint32("llama.rope.dimension_count", HEAD_DIM)
    writer.add_tensor_info("huge.weight", (data_bytes,), np.dtype(np.int8), data_bytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "r+b") as fh:
        fh.seek(0, 2)
        header_end = fh.tell()
        fh.truncate(header_end + (-header_end % 32) + data_bytes)
    return path
