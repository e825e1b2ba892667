"""``yarn-cli inspect``: a file's facts, its JSON and YaRN view, a converted file, the embedded model, the
tokenizer (vocabulary, BOS/EOS, chat template) and quantization."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from gguf import GGUFValueType
from ggufs import CONTEXT, N_VOCAB, write_sparse_gguf, write_tiny_llama

from yarn_cli.gguf.inplace import undo_path
from yarn_cli.model import open_model


def test_inspect_shows_the_facts(run_cli, tiny_model: Path) -> None:
    result = run_cli("inspect", tiny_model)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "GGUF v3, little-endian, 21 tensors" in text
    assert "Context length  256" in text
    assert "freq_base 10000, 16 rotary dims" in text
    assert "2 layers, 4 heads, 2 KV heads, head size 16" in text
    assert "Scaling         none" in text
    # f16 K+V: 2 layers x 2 KV heads x (16 + 16) x 2 bytes = 256 bytes per token
    assert re.search(r"2,048 │\s+8x │\s+0\.5 MiB", text)


def test_inspect_json_and_yarn_view(run_cli, tiny_model: Path) -> None:
    result = run_cli("inspect", tiny_model, "--json", "--factor", "4")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["architecture"] == "llama" and data["uses_rope"] is True
    assert data["context_length"] == CONTEXT
    assert data["rope"] == {
        "freq_base": 10000.0,
        "dimension_count": 16,
        "freq_base_swa": None,
        "sliding_window": None,
        "window_scaling": "no_window",
        "factor_tensors": [],
        "yarn_log_multiplier": None,
        "llama_cpp": [],
        "hugging_face": {
            "overrides": {
                "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "max_position_embeddings": 256,
            },
            "max_model_len": 256,
            "vllm_flags": (
                '--hf-overrides \'{"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},'
                '"max_position_embeddings":256}\' --max-model-len 256'
            ),
            "reason": None,
        },
    }  # fmt: skip
    assert data["kv_cache_f16"][0] == {"multiple": 1, "context": 256, "bytes": 256 * 256, "bytes_windowed": None}
    yarn = data["yarn"]
    assert (yarn["low"], yarn["high"]) == (0, 4)
    assert yarn["mscale"] == pytest.approx(0.1 * 1.3862943611198906 + 1)
    assert len(yarn["pairs"]) == 8
    assert yarn["pairs"][-1]["freq_ratio"] == pytest.approx(0.25)


@pytest.mark.slow
def test_inspect_a_converted_file(run_cli, tiny_model: Path) -> None:
    assert run_cli("convert", tiny_model, "--factor", "4", "-q").returncode == 0
    result = run_cli("inspect", tiny_model.with_name("tiny.yarn-4x.gguf"))
    assert "Context length  1024 (trained: 256)" in result.stdout
    assert "yarn x4 (original context 256)" in result.stdout
    assert "undo: convert --method none" in result.stdout


def test_inspect_names_ntk_by_parts_and_a_yarn_with_another_attn_factor_apart(run_cli, tiny_model: Path) -> None:
    """NTK-by-parts is written as YaRN whose attn_factor cancels the temperature: inspect says which it is."""
    assert run_cli("convert", tiny_model, "--method", "ntk-by-parts", "--factor", "2", "-q").returncode == 0
    assert run_cli("convert", tiny_model, "--factor", "2", "--attn-factor", "0.9", "-q").returncode == 0
    notes = {}
    for name in ("tiny.ntk-by-parts-2x.gguf", "tiny.yarn-2x.gguf"):
        result = run_cli("inspect", tiny_model.with_name(name), "--json")
        assert result.returncode == 0, result.stderr
        notes[name] = json.loads(result.stdout)["rope"]["llama_cpp"]
    assert notes["tiny.ntk-by-parts-2x.gguf"][0].startswith(
        "NTK-by-parts x2 (YaRN whose temperature the attn_factor cancels) over 256 tokens:"
    )
    assert notes["tiny.ntk-by-parts-2x.gguf"][0].endswith("times the file's attn_factor 0.935178: attention unscaled")
    assert notes["tiny.yarn-2x.gguf"][0].startswith("YaRN x2 over 256 tokens:")
    assert notes["tiny.yarn-2x.gguf"][0].endswith("times the file's attn_factor 0.9")


def test_inspect_default_model(run_cli) -> None:
    result = run_cli("inspect", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["file"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (data["context_length"], data["layers"], data["heads"], data["kv_heads"]) == (8192, 30, 9, 3)
    assert data["rope"]["freq_base"] == 100000.0 and data["rope"]["dimension_count"] == 64
    assert data["rope"]["llama_cpp"] == [] and data["rope"]["window_scaling"] == "no_window"


def test_inspect_warns_about_an_interrupted_change_and_still_shows_the_file(run_cli, tiny_model: Path) -> None:
    undo_path(tiny_model).write_bytes(b"")
    result = run_cli("inspect", tiny_model)
    assert result.returncode == 0
    assert "Warning: an in-place change of" in result.stderr and "--recover" in result.stderr
    assert "Context length  256" in result.stdout


# --- the tokenizer and the quantization --------------------------------------------------------

SMOLLM2_TOKENIZER = {
    "model": "gpt2",
    "algorithm": "BPE",
    "pre": "smollm",
    "tokens": 49152,
    "bos": {"id": 1, "text": "<|im_start|>"},
    "eos": {"id": 2, "text": "<|im_end|>"},
    "add_bos": False,
}


def test_inspect_shows_smollm2s_tokenizer_quantization_and_chat_template(run_cli) -> None:
    text = run_cli("inspect", "default")
    assert text.returncode == 0, text.stderr
    lines = [line.rstrip() for line in text.stdout.splitlines()]
    assert "Quantization    Q4_1" in lines
    assert "Tokenizer       gpt2 (BPE, pre-tokenizer smollm), 49,152 tokens" in lines
    assert "                BOS 1 '<|im_start|>' (not added), EOS 2 '<|im_end|>'" in lines
    assert "Chat template   chatml, 368 characters" in lines
    as_json = run_cli("inspect", "default", "--json")
    data = json.loads(as_json.stdout)
    assert data["quantization"] == {"file_type": 3, "name": "Q4_1"}
    template = data["tokenizer"].pop("chat_template")
    assert data["tokenizer"] == SMOLLM2_TOKENIZER
    assert template["length"] == 368 and template["format"] == "chatml"
    assert template["start"] == "{% for message in messages %}{% if loop."  # its first words, not the whole


def test_inspect_says_a_tiny_model_has_no_chat_template(run_cli, tiny_model: Path) -> None:
    text = run_cli("inspect", tiny_model)
    lines = [line.rstrip() for line in text.stdout.splitlines()]
    assert "Quantization    F32" in lines
    assert f"Tokenizer       llama (SentencePiece), {N_VOCAB} tokens" in lines
    assert "                BOS 1 '<s>', EOS 2 '</s>'" in lines  # add_bos_token: not stated
    assert "Chat template   none: chat continues the text as plain completion" in lines
    data = json.loads(run_cli("inspect", tiny_model, "--json").stdout)
    assert data["quantization"] == {"file_type": 0, "name": "F32"}
    assert data["tokenizer"] == {
        "model": "llama",
        "algorithm": "SentencePiece",
        "pre": None,
        "tokens": N_VOCAB,
        "bos": {"id": 1, "text": "<s>"},
        "eos": {"id": 2, "text": "</s>"},
        "add_bos": None,
        "chat_template": None,
    }


S, U32, BOOL = GGUFValueType.STRING, GGUFValueType.UINT32, GGUFValueType.BOOL
LLAMA3 = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{% endfor %}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"tokenizer.chat_template": (LLAMA3, S)}, {"chat_template": (len(LLAMA3), "llama3", LLAMA3[:40])}),
        ({"tokenizer.chat_template": ("{{ messages }}", S)}, {"chat_template": (14, None, "{{ messages }}")}),
        ({"tokenizer.ggml.add_bos_token": (True, BOOL)}, {"add_bos": True}),
        ({"tokenizer.ggml.eos_token_id": (9999, U32)}, {"eos": (9999, None)}),  # beyond the vocabulary
        ({"general.file_type": (15, U32)}, {"file_type": "Q4_K_M"}),
        ({"general.file_type": (1024 + 7, U32)}, {"file_type": "Q8_0 (guessed)"}),
        ({"general.file_type": (999, U32)}, {"file_type": "type 999 (one this gguf-py does not name)"}),
    ],
    ids=["llama3-template", "unknown-template", "add-bos", "eos-outside", "q4_k_m", "guessed", "unknown-type"],
)
def test_what_the_tokenizer_keys_say(
    tmp_path: Path, extra: dict[str, tuple[object, GGUFValueType]], expected: dict[str, object]
) -> None:
    model = open_model(write_tiny_llama(tmp_path / "m.gguf", extra=extra))
    tokenizer, file_type = model.tokenizer, model.file_type
    assert file_type is not None
    seen = {
        "chat_template": None
        if tokenizer.chat_template is None
        else (tokenizer.chat_template.length, tokenizer.chat_template.format, tokenizer.chat_template.start),
        "add_bos": tokenizer.add_bos,
        "eos": None if tokenizer.eos is None else (tokenizer.eos.id, tokenizer.eos.text),
        "file_type": file_type.name,
    }
    assert {key: seen[key] for key in expected} == expected


def test_inspect_shows_a_file_without_tokenizer_keys(run_cli, tmp_path: Path) -> None:
    """A header with no vocabulary, ids or quantization (gguf-py writes such files): each one said, no error."""
    model = write_sparse_gguf(tmp_path / "bare.gguf", 64)
    result = run_cli("inspect", model)
    assert result.returncode == 0, result.stderr
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert "Quantization    (not stated)" in lines
    assert "Tokenizer       (not stated), no vocabulary" in lines
    assert "                BOS (not stated), EOS (not stated)" in lines
    data = json.loads(run_cli("inspect", model, "--json").stdout)
    assert data["quantization"] is None
    assert data["tokenizer"]["tokens"] is None and data["tokenizer"]["bos"] is None
