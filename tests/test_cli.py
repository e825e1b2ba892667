"""The installed command line, run as a user runs it: output, exit codes, exact error lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ggufs import CONTEXT, write_sparse_gguf, write_tiny_llama
from helpers import error_line, installed_command

from yarn_cli import __version__


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_console_script_version() -> None:
    result = subprocess.run([installed_command(), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"yarn-cli {__version__}\n"


def test_module_version(run_cli) -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"yarn-cli {__version__}\n")


@pytest.mark.parametrize("command", [[], ["inspect"], ["convert"]])
def test_help_teaches_with_an_example(run_cli, command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    if command:
        assert "Example" in result.stdout
    else:
        assert "inspect" in result.stdout and "convert" in result.stdout


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


def test_convert_prints_changes_and_summary(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # status goes to stderr
    assert "llama.rope.scaling.type" in result.stderr
    assert "yarn x4: context_length 256 -> 1024; written to" in result.stderr
    assert "verified" in result.stderr
    assert files_in(tiny_model.parent) == ["tiny.gguf", "tiny.yarn-4x.gguf"]


def test_convert_dry_run_table(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--context", "1024", "--dry-run")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") == 4}
    assert "256" in rows["llama.context_length"] and "1024" in rows["llama.context_length"]
    assert "'yarn'" in rows["llama.rope.scaling.type"]
    assert "Dry run: yarn x4: context_length 256 -> 1024; nothing written." in result.stdout
    assert files_in(tiny_model.parent) == ["tiny.gguf"]


def test_convert_json(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--method", "linear", "--factor", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["method"] == "linear" and data["factor"] == 2.0 and data["context_length"] == 512
    assert data["outputs"][0]["path"] == str(tiny_model.with_name("tiny.linear-2x.gguf"))
    assert data["verified"] is True
    overrides = data["runtime_equivalent"]["kv_overrides"]  # the same keys, loaded without writing them
    assert overrides == {
        "llama.context_length": 512,
        "llama.rope.scaling.type": "linear",
        "llama.rope.scaling.factor": 2.0,
    }
    assert data["runtime_flags"] == (
        "--override-kv llama.context_length=int:512 --override-kv llama.rope.scaling.type=str:linear "
        "--override-kv llama.rope.scaling.factor=float:2"
    )
    assert {c["key"] for c in data["changes"]} >= {"llama.rope.scaling.type", "llama.context_length"}


def test_convert_default_model_writes_to_the_current_folder(run_cli, tmp_path: Path) -> None:
    result = run_cli("convert", "default", "--factor", "2", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path) == ["SmolLM2-135M-Instruct.Q4_1.yarn-2x.gguf"]


def test_in_place_and_undo_from_the_command_line(run_cli, tiny_model: Path) -> None:
    original = tiny_model.read_bytes()
    assert run_cli("convert", tiny_model, "--in-place", "--factor", "2", "-q").returncode == 0
    assert tiny_model.read_bytes() != original
    result = run_cli("convert", tiny_model, "--in-place", "--method", "none")
    assert result.returncode == 0, result.stderr
    assert "Replaced the file's previous scaling: yarn x2" in result.stderr
    assert tiny_model.read_bytes() == original


def test_a_converted_file_converted_again_says_both_contexts(run_cli, tiny_model: Path) -> None:
    assert run_cli("convert", tiny_model, "--in-place", "--factor", "4", "-q").returncode == 0
    result = run_cli("convert", tiny_model, "--in-place", "--factor", "2")  # lower, as asked: from the original
    assert result.returncode == 0, result.stderr
    assert "yarn x2: context_length 1024 -> 512 (x2 of the 256 it came with); written in place" in result.stderr


def test_warnings_for_options_the_architecture_ignores(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "2", "--beta-fast", "16", "-q")
    assert result.returncode == 0
    assert "Warning: llama.cpp ignores yarn_beta_fast/yarn_beta_slow for llama" in result.stderr


# --- bad input: one line, non-zero exit, nothing written -----------------------------------


def _broken_files(folder: Path) -> dict[str, Path]:
    tiny = write_tiny_llama(folder / "good.gguf")
    data = tiny.read_bytes()
    files = {}
    (folder / "text.gguf").write_text("hello, I am not a model\n" * 4)
    files["text"] = folder / "text.gguf"
    (folder / "trunc.gguf").write_bytes(data[:200])
    files["truncated"] = folder / "trunc.gguf"
    (folder / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + data[8:])
    files["version"] = folder / "v1.gguf"
    (folder / "short.gguf").write_bytes(data[: len(data) - 1000])
    files["short"] = folder / "short.gguf"
    tiny.unlink()
    return files


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("text", "is not a GGUF file (it starts with b'hell', not b'GGUF')"),
        ("truncated", "the GGUF header is truncated or corrupt"),
        ("version", "is GGUF version 1; only versions 2 and 3 are supported"),
        ("short", "is truncated: tensor 'output.weight' ends at byte"),
    ],
)
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_broken_files(run_cli, tmp_path: Path, name: str, expected: str, command: str) -> None:
    files = _broken_files(tmp_path)
    args = [command, files[name]] + (["--factor", "2"] if command == "convert" else [])
    result = run_cli(*args)
    assert result.returncode == 1
    assert expected in error_line(result)
    assert files_in(tmp_path) == sorted(p.name for p in files.values())


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--factor", "1"], 1, "the scale factor must be a finite number above 1, got 1"),
        (["--factor", "0.5"], 1, "above 1, got 0.5"),
        (["--factor", "nan"], 1, "above 1, got nan"),
        (["--factor", "inf"], 1, "above 1, got inf"),
        (["--factor", "abc"], 2, "Invalid value for '--factor'"),
        (["--context", "256"], 1, "--context 256 is not above the original context 256"),
        (["--context", "-5"], 1, "--context -5 is not above the original context 256"),
        ([], 1, "give the scale with --factor S or the target context with --context N"),
        (["--method", "rope"], 2, "Invalid value for '--method'"),
        (["--factor", "2", "--bogus"], 2, "No such option: --bogus"),
    ],
)
def test_bad_arguments(run_cli, tiny_model: Path, args: list[str], code: int, expected: str) -> None:
    result = run_cli("convert", tiny_model, *args)
    assert result.returncode == code
    assert expected in error_line(result)
    assert files_in(tiny_model.parent) == ["tiny.gguf"]


def test_missing_input(run_cli, tmp_path: Path) -> None:
    result = run_cli("convert", tmp_path / "nope.gguf", "--factor", "2")
    assert result.returncode == 1
    assert error_line(result) == f"Error: {tmp_path / 'nope.gguf'} does not exist"


def test_output_equal_to_input(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, tiny_model, "--factor", "2", "--force")
    assert result.returncode == 1
    assert "is the input file; use --in-place to replace the input" in error_line(result)


def test_output_folder_missing(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, tiny_model.parent / "no" / "out.gguf", "--factor", "2")
    assert result.returncode == 1
    assert "does not exist; create it first" in error_line(result)


def test_existing_output(run_cli, tiny_model: Path) -> None:
    assert run_cli("convert", tiny_model, "--factor", "2", "-q").returncode == 0
    result = run_cli("convert", tiny_model, "--factor", "2")
    assert result.returncode == 1
    assert "tiny.yarn-2x.gguf already exists; use --force to overwrite it" in error_line(result)


def test_architecture_without_rope(run_cli, tmp_path: Path) -> None:
    bloom = write_tiny_llama(tmp_path / "bloom.gguf", arch="bloom")
    result = run_cli("convert", bloom, "--factor", "2")
    assert result.returncode == 1
    assert error_line(result) == "Error: bloom models use ALiBi attention biases, not RoPE: there is nothing to scale"
    assert "RoPE            not used: ALiBi attention biases" in run_cli("inspect", bloom).stdout


def test_not_enough_disk_space(run_cli, tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    sparse = write_sparse_gguf(tmp_path / "huge.gguf", free + 2**30)  # takes no space itself
    result = run_cli("convert", sparse, "--factor", "2")
    assert result.returncode == 1
    assert "not enough disk space in" in error_line(result)
    assert files_in(tmp_path) == ["huge.gguf"]
