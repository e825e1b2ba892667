"""``yarn-cli convert`` run as a user runs it: the table of changes, the summary, JSON, one line for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ggufs import write_sparse_gguf, write_tiny_llama
from helpers import error_line, files_in, sweep


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_converted_file_converted_again_says_both_contexts(run_cli, tiny_model: Path) -> None:
    assert run_cli("convert", tiny_model, "--in-place", "--factor", "4", "-q").returncode == 0
    result = run_cli("convert", tiny_model, "--in-place", "--factor", "2")  # lower, as asked: from the original
    assert result.returncode == 0, result.stderr
    assert "yarn x2: context_length 1024 -> 512 (x2 of the 256 it came with); written in place" in result.stderr


@pytest.mark.slow
def test_warnings_for_options_the_architecture_ignores(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "2", "--beta-fast", "16", "-q")
    assert result.returncode == 0
    assert "Warning: llama.cpp ignores yarn_beta_fast/yarn_beta_slow for llama" in result.stderr


# --- bad input: one line, non-zero exit, nothing written -----------------------------------


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    sweep(
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
            (
                ["--method", "ntk-by-parts", "--factor", "2", "--attn-factor", "1.1"],
                1,
                "Error: --method ntk-by-parts sets rope.scaling.attn_factor itself, to 1 / (0.1 ln S + 1), which "
                "cancels YaRN's temperature; for another attention factor use --method yarn --attn-factor A",
            ),
            (["--factor", "2", "--bogus"], 2, "No such option: --bogus"),
        ]
    ),
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


@pytest.mark.slow
def test_output_equal_to_input(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, tiny_model, "--factor", "2", "--force")
    assert result.returncode == 1
    assert "is the input file; use --in-place to replace the input" in error_line(result)


@pytest.mark.slow
def test_output_folder_missing(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, tiny_model.parent / "no" / "out.gguf", "--factor", "2")
    assert result.returncode == 1
    assert "does not exist; create it first" in error_line(result)


@pytest.mark.slow
def test_existing_output(run_cli, tiny_model: Path) -> None:
    assert run_cli("convert", tiny_model, "--factor", "2", "-q").returncode == 0
    result = run_cli("convert", tiny_model, "--factor", "2")
    assert result.returncode == 1
    assert "tiny.yarn-2x.gguf already exists; use --force to overwrite it" in error_line(result)


@pytest.mark.slow
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
