"""A converted file's scaling as a Hugging Face config gives it (vLLM's --hf-overrides), through the CLI.

What these overrides do in a real vLLM is measured by benchmarks/vllm_check.py (docs/serving.md):
vLLM's perplexity and passkey answers with them match the converted file run by llama.cpp.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

YARN_X4 = {
    "rope_parameters": {
        "rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
    },
    "max_position_embeddings": 1024,
}  # fmt: skip


def convert_json(run_cli, model: Path, *args: str) -> dict:
    result = run_cli("convert", model, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_yarn_file_gives_vllm_the_same_scaling(run_cli, tiny_model: Path) -> None:
    data = convert_json(run_cli, tiny_model, "--factor", "4")
    hf = data["hugging_face"]
    assert hf["overrides"] == YARN_X4 and hf["max_model_len"] == 1024 and hf["reason"] is None
    written = Path(data["outputs"][0]["path"])
    inspected = run_cli("inspect", written)
    assert inspected.returncode == 0, inspected.stderr
    lines = [line for line in inspected.stdout.splitlines() if line.startswith("vLLM")]
    assert len(lines) == 1  # one line, whatever the terminal's width, so that it can be copied
    found = re.search(r"vllm serve MODEL --hf-overrides '(.+)' --max-model-len (\d+)$", lines[0])
    assert found is not None, lines[0]
    assert json.loads(found.group(1)) == YARN_X4 and found.group(2) == "1024"
    as_json = json.loads(run_cli("inspect", written, "--json").stdout)["rope"]["hugging_face"]
    assert as_json == hf


@pytest.mark.slow
def test_the_betas_llama_cpp_ignores_are_left_out(run_cli, tiny_model: Path) -> None:
    """llama.cpp reads yarn_beta_* for grok and mistral3 only: a llama file runs with 32 and 1, HF's defaults."""
    hf = convert_json(run_cli, tiny_model, "--factor", "4", "--beta-fast", "16", "--dry-run")["hugging_face"]
    assert hf["overrides"] == YARN_X4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "rope_parameters", "max_positions"),
    [
        # vLLM multiplies max_position_embeddings by a linear factor itself: the trained 256 gives 512
        (("--method", "linear", "--factor", "2"), {"rope_type": "linear", "factor": 2.0}, 256),
        (("--method", "ntk", "--factor", "2"), {"rope_type": "default"}, 512),  # the raised base, read back
    ],
)
def test_linear_and_ntk(
    run_cli, tiny_model: Path, args: tuple[str, ...], rope_parameters: dict, max_positions: int
) -> None:
    data = convert_json(run_cli, tiny_model, *args)
    written = json.loads(run_cli("inspect", data["outputs"][0]["path"], "--json").stdout)
    expected = {"rope_theta": written["rope"]["freq_base"], **rope_parameters}
    hf = data["hugging_face"]
    assert hf["overrides"] == {"rope_parameters": expected, "max_position_embeddings": max_positions}
    assert hf["max_model_len"] == 512
    if args[1] == "ntk":
        assert expected["rope_theta"] > 10000.0


@pytest.mark.slow
def test_undo_gives_the_plain_config_back(run_cli, tiny_model: Path) -> None:
    converted = Path(convert_json(run_cli, tiny_model, "--factor", "4")["outputs"][0]["path"])
    hf = convert_json(run_cli, converted, "--method", "none", "--dry-run")["hugging_face"]
    assert hf["overrides"] == {
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "max_position_embeddings": 256,
    }  # fmt: skip


def test_no_line_for_an_unscaled_file(run_cli, tiny_model: Path) -> None:
    result = run_cli("inspect", tiny_model)
    assert result.returncode == 0 and "Context length" in result.stdout
    assert "vllm serve" not in result.stdout


@pytest.mark.slow
def test_an_own_attention_factor_becomes_the_whole_factor(run_cli, tiny_model: Path) -> None:
    """llama.cpp multiplies 0.1 ln s + 1 by the file's attn_factor; HF's attention_factor replaces it."""
    hf = convert_json(run_cli, tiny_model, "--factor", "4", "--attn-factor", "1.2", "--dry-run")["hugging_face"]
    parameters = hf["overrides"]["rope_parameters"]
    assert parameters["attention_factor"] == pytest.approx(1.2 * (0.1 * math.log(4) + 1), rel=1e-6)
    assert {k: v for k, v in parameters.items() if k != "attention_factor"} == YARN_X4["rope_parameters"]
