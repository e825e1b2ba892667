"""``yarn-cli inspect``: a file's facts, its JSON and YaRN view, a converted file, the embedded model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ggufs import CONTEXT

from yarn_cli.gguf.inplace import undo_path


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
