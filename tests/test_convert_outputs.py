"""``convert`` owns every output it writes: the model's files and its Ollama Modelfile are named and checked
together, written through one staging, and appear together or not at all; the header is read once."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ggufs import write_tiny_llama
from helpers import error_line, interrupt_on_call, sha256, snapshot, sweep
from typer.testing import CliRunner

import yarn_cli.gguf.header
from yarn_cli.cli.app import app
from yarn_cli.conversion import ConvertRequest, convert_file, write_modelfile
from yarn_cli.default_model import default_model_path
from yarn_cli.files.faults import CRASH_ENV, CRASH_EXIT, OUTPUTS_STAGED
from yarn_cli.gguf.inplace import RecoveryError, undo_path

MODELFILE = ["# ollama create NAME -f tiny.yarn-2x.Modelfile", "FROM ./tiny.yarn-2x.gguf", "PARAMETER num_ctx 512"]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- together or not at all -------------------------------------------------------------------


def test_a_crash_before_the_renames_leaves_neither_the_model_nor_its_modelfile(run_cli, tiny_model: Path) -> None:
    folder = tiny_model.parent
    crashed = run_cli("convert", tiny_model, "--factor", "2", "--modelfile", env={CRASH_ENV: OUTPUTS_STAGED})
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert [n for n in names(folder) if not n.endswith(".partial")] == ["tiny.gguf"]
    assert len(list(folder.glob("*.partial"))) == 2  # both written in full, neither renamed into place

    again = run_cli("convert", tiny_model, "--factor", "2", "--modelfile")
    assert again.returncode == 0, again.stderr
    assert names(folder) == ["tiny.gguf", "tiny.yarn-2x.Modelfile", "tiny.yarn-2x.gguf"]  # the leftovers removed
    assert (folder / "tiny.yarn-2x.Modelfile").read_text().splitlines() == MODELFILE


def test_ctrl_c_while_the_model_is_written_leaves_no_modelfile(tiny_model: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        convert_file(tiny_model, ConvertRequest(factor=2.0), modelfile=True, progress=interrupt_on_call(1))
    assert names(tiny_model.parent) == ["tiny.gguf"]


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as name:
        yield Path(name)


@pytest.mark.slow
def test_an_in_place_change_that_fails_leaves_no_modelfile(run_cli, tmpfs_dir: Path) -> None:
    model = write_tiny_llama(tmpfs_dir / "tiny.gguf")
    (tmpfs_dir / "other.gguf").hardlink_to(model)
    before = sha256(model)
    result = run_cli("convert", model, "--in-place", "--factor", "2", "--modelfile")
    assert result.returncode == 1
    assert "has 2 names (hard links)" in error_line(result)
    assert sha256(model) == before
    assert names(tmpfs_dir) == ["other.gguf", "tiny.gguf"]


@pytest.mark.slow
def test_an_in_place_change_writes_its_modelfile_beside_the_file(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--in-place", "--factor", "2", "--modelfile", "--json")
    assert result.returncode == 0, result.stderr
    modelfile = tiny_model.with_name("tiny.Modelfile")
    assert json.loads(result.stdout)["modelfile"] == str(modelfile)
    assert modelfile.read_text().splitlines()[1:] == ["FROM ./tiny.gguf", "PARAMETER num_ctx 512"]


def test_the_library_writes_the_modelfile_as_an_output(tiny_model: Path) -> None:
    result = convert_file(tiny_model, ConvertRequest(factor=2.0), modelfile=True)
    assert result.modelfile is not None
    assert result.modelfile.path == tiny_model.with_name("tiny.yarn-2x.Modelfile")
    assert result.modelfile.num_ctx == 512
    assert result.modelfile.path.read_text().splitlines() == MODELFILE


# --- a dry run says what it would write -------------------------------------------------------


@pytest.mark.slow
def test_a_dry_run_names_the_modelfile_it_would_write(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "2", "--modelfile", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [
        f"Ollama: {tiny_model.with_name('tiny.yarn-2x.Modelfile')} (num_ctx 512) would be written.",
        "Dry run: yarn x2: context_length 256 -> 512; nothing written.",
    ]
    as_json = run_cli("convert", tiny_model, "--factor", "2", "--modelfile", "--dry-run", "--json")
    assert json.loads(as_json.stdout)["modelfile"] is None  # the Modelfile written: none
    assert names(tiny_model.parent) == ["tiny.gguf"]


# --- the embedded model ------------------------------------------------------------------------


def test_the_library_writes_the_embedded_models_outputs_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sha256(default_model_path())
    result = convert_file("default", ConvertRequest(factor=2.0), modelfile=True, dry_run=True)
    stem = default_model_path().name[: -len(".gguf")]
    assert result.modelfile is not None and result.modelfile.path == tmp_path / f"{stem}.yarn-2x.Modelfile"
    written = convert_file("default", ConvertRequest(factor=2.0), modelfile=True)
    assert [w.path for w in written.outputs] == [tmp_path / f"{stem}.yarn-2x.gguf"]
    assert names(tmp_path) == [f"{stem}.yarn-2x.Modelfile", f"{stem}.yarn-2x.gguf"]
    assert sha256(default_model_path()) == before


# --- one read of the header -------------------------------------------------------------------


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """How often yarn-cli's own ``read_header`` reads each file, wherever it was imported."""
    reads: Counter[Path] = Counter()
    original = yarn_cli.gguf.header.read_header

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads[Path(path).absolute()] += 1
        return original(path, *args, **kwargs)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("yarn_cli") and getattr(module, "read_header", None) is original:
            monkeypatch.setattr(module, "read_header", counting)
    return reads


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "written"])
def test_convert_with_a_modelfile_reads_the_header_once(
    tiny_model: Path, header_reads: Counter[Path], dry_run: bool
) -> None:
    out = tiny_model.with_name("out.gguf")
    args = ["convert", str(tiny_model), str(out), "--factor", "2", "--modelfile", *(["--dry-run"] if dry_run else [])]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert header_reads.pop(tiny_model) == 1
    # and the output, when written, is read back once to verify it, under its temporary name
    assert [(p.parent, p.name.startswith(".out.gguf."), n) for p, n in header_reads.items()] == (
        [] if dry_run else [(out.parent, True, 1)]
    )


def test_the_header_counter_sees_every_read(tiny_model: Path, header_reads: Counter[Path]) -> None:
    """The counting above would pass vacuously if it missed a reader: ``inspect`` reads the header once too."""
    result = CliRunner().invoke(app, ["inspect", str(tiny_model)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert header_reads == Counter({tiny_model: 1})


def test_nothing_of_a_refused_modelfile_is_left(run_cli, tiny_model: Path) -> None:
    shutil.copyfile(tiny_model, tiny_model.with_name("tiny.yarn-2x.Modelfile"))
    result = run_cli("convert", tiny_model, "--factor", "2", "--modelfile")
    modelfile = tiny_model.with_name("tiny.yarn-2x.Modelfile")
    assert error_line(result) == f"Error: {modelfile} exists; use --force to replace it"
    assert names(tiny_model.parent) == ["tiny.gguf", "tiny.yarn-2x.Modelfile"]


# --- --modelfile: checked before the model is written -------------------------------------------


@pytest.mark.slow
def test_a_modelfile_that_cannot_be_written_is_found_before_the_model(run_cli, tiny_model: Path) -> None:
    folder = tiny_model.parent
    (folder / "o.Modelfile").mkdir()
    os.symlink("/dev/null", folder / "n.Modelfile")
    before = snapshot(folder)
    cases = [
        (["o.gguf"], "--modelfile would write o.Modelfile, which is a folder; move it, or give another OUTPUT"),
        (
            ["n.gguf"],
            "--modelfile would write n.Modelfile, which is not a regular file (a device, pipe or socket); "
            "give another OUTPUT",
        ),
        (
            ["/sys/o.gguf"],
            "--modelfile /sys/o.Modelfile: cannot write in /sys (Permission denied); choose another place",
        ),
    ]
    for output, line in cases:
        result = run_cli("convert", tiny_model, *output, "--factor", "2", "--modelfile", "--force")
        assert result.returncode == 1
        assert error_line(result) == f"Error: {line}"
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted([tiny_model.name, "o.Modelfile", "n.Modelfile"])


def test_a_modelfile_is_never_written_over_the_input_model(run_cli, tiny_model: Path) -> None:
    model = tiny_model.rename(tiny_model.with_name("x.Modelfile"))  # a model under an odd name
    before = snapshot(model.parent)
    result = run_cli("convert", model.name, "x.gguf", "--factor", "2", "--modelfile", "--force")
    assert result.returncode == 1
    assert error_line(result) == (
        "Error: --modelfile would write x.Modelfile, which is the model x.Modelfile; give an OUTPUT whose "
        "Modelfile name is free"
    )
    assert snapshot(model.parent) == before


@pytest.mark.slow
def test_convert_writes_an_ollama_modelfile_with_the_new_context(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "4", "--modelfile")
    assert result.returncode == 0, result.stderr
    modelfile = tiny_model.with_name("tiny.yarn-4x.Modelfile")
    assert modelfile.read_text().splitlines()[1:] == ["FROM ./tiny.yarn-4x.gguf", "PARAMETER num_ctx 1024"]
    assert "ollama create NAME -f" in result.stderr
    again = run_cli("convert", tiny_model, "--factor", "4", "--modelfile", "--force", "--json")
    assert json.loads(again.stdout)["modelfile"] == str(modelfile)
    before = sorted(p.name for p in tiny_model.parent.iterdir())
    other = run_cli("convert", tiny_model, "--factor", "2", "--modelfile", "out.gguf")
    assert other.returncode == 0  # a new output, a new Modelfile beside it
    exists = run_cli("convert", tiny_model, "--factor", "4", "--modelfile")
    assert exists.returncode == 1 and "tiny.yarn-4x.Modelfile exists; use --force" in error_line(exists)
    undo = run_cli("convert", tiny_model.with_name("tiny.yarn-4x.gguf"), "--method", "none", "--modelfile")
    assert undo.returncode == 1 and "--modelfile is for a scaled model" in error_line(undo)
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == sorted([*before, "out.gguf", "out.Modelfile"])


# --- the Modelfile alone, for a file already scaled -------------------------------------------

AS_IT_IS = ["# ollama create NAME -f tiny.yarn-2x.Modelfile", "FROM ./tiny.yarn-2x.gguf", "PARAMETER num_ctx 512"]


@pytest.fixture
def converted(tiny_model: Path) -> Path:
    """tiny.gguf converted with YaRN x2 (context_length 512), beside it."""
    return convert_file(tiny_model, ConvertRequest(factor=2.0)).outputs[0].path


def test_a_converted_file_gets_its_modelfile_alone_and_stays_byte_identical(run_cli, converted: Path) -> None:
    folder = converted.parent
    before = snapshot(folder)
    result = run_cli("convert", converted, "--modelfile")
    assert result.returncode == 0, result.stderr
    modelfile = converted.with_name("tiny.yarn-2x.Modelfile")
    assert modelfile.read_text().splitlines() == AS_IT_IS
    assert result.stderr.splitlines() == [
        f"{converted} as it is (context_length 512): only its Modelfile written, the model unchanged.",
        f"Ollama: {modelfile} (num_ctx 512); run: ollama create NAME -f {modelfile}",
    ]
    assert result.stdout == ""
    assert snapshot(folder) == {**before, modelfile.name: sha256(modelfile)}  # the model files byte for byte

    as_json = run_cli("convert", converted, "--modelfile", "--force", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["modelfile"] == str(modelfile)
    # a conversion's keys, saying that nothing was converted
    assert set(data) == set(json.loads(run_cli("convert", converted, "--factor", "4", "--dry-run", "--json").stdout))
    nothing_converted = (data["method"], data["outputs"], data["changes"], data["path"], data["verified"])
    assert nothing_converted == (None, [], [], None, False)
    assert (data["context_length"], data["original_context"], data["dry_run"]) == (512, 256, False)
    assert data["hugging_face"]["max_model_len"] == 512
    assert snapshot(folder) == {**before, modelfile.name: sha256(modelfile)}


def test_a_dry_run_of_the_modelfile_alone_lists_it_and_writes_nothing(run_cli, converted: Path) -> None:
    before = snapshot(converted.parent)
    result = run_cli("convert", converted, "--modelfile", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Ollama: {converted.with_name('tiny.yarn-2x.Modelfile')} (num_ctx 512) would be written.",
        f"Dry run: the Modelfile of {converted} as it is (context_length 512); nothing written.",
    ]
    as_json = run_cli("convert", converted, "--modelfile", "--dry-run", "--json")
    data = json.loads(as_json.stdout)
    assert (data["dry_run"], data["modelfile"], data["context_length"]) == (True, None, 512)
    assert snapshot(converted.parent) == before


def test_an_existing_modelfile_is_replaced_only_with_force(run_cli, converted: Path) -> None:
    modelfile = converted.with_name("tiny.yarn-2x.Modelfile")
    modelfile.write_text("FROM ./mine.gguf\n")
    refused = run_cli("convert", converted, "--modelfile")
    assert refused.returncode == 1
    assert error_line(refused) == f"Error: {modelfile} exists; use --force to replace it"
    assert modelfile.read_text() == "FROM ./mine.gguf\n"
    forced = run_cli("convert", converted, "--modelfile", "--force")
    assert forced.returncode == 0, forced.stderr
    assert modelfile.read_text().splitlines() == AS_IT_IS


GIVE_THE_SCALE = "Error: give the scale with --factor S or the target context with --context N"
NO_NUM_CTX = "Error: --modelfile is for a scaled model; the original needs no num_ctx of its own"


@pytest.mark.parametrize(
    ("args", "line"),
    sweep(
        [
            (["--method", "none"], NO_NUM_CTX),
            (["--method", "yarn"], GIVE_THE_SCALE),
            (["--in-place"], GIVE_THE_SCALE),
            (["out.gguf"], GIVE_THE_SCALE),
            (["--attn-factor", "2"], GIVE_THE_SCALE),
        ]
    ),
    ids=["method-none", "method-yarn", "in-place", "output", "attn-factor"],
)
def test_what_asks_for_a_conversion_is_not_the_modelfile_alone(
    run_cli, converted: Path, args: list[str], line: str
) -> None:
    before = snapshot(converted.parent)
    result = run_cli("convert", converted, "--modelfile", *args)
    assert result.returncode == 1, args
    assert error_line(result) == line
    assert snapshot(converted.parent) == before


def test_a_file_with_no_scaling_gets_no_modelfile_alone(run_cli, tiny_model: Path) -> None:
    before = snapshot(tiny_model.parent)
    result = run_cli("convert", tiny_model, "--modelfile")
    assert result.returncode == 1
    assert error_line(result) == (
        f"Error: {tiny_model} carries no RoPE scaling: give --factor S or --context N to scale it "
        "(--modelfile alone is for a file already scaled)"
    )
    assert snapshot(tiny_model.parent) == before


def test_the_modelfile_alone_goes_through_the_staging(run_cli, converted: Path) -> None:
    folder = converted.parent
    crashed = run_cli("convert", converted, "--modelfile", env={CRASH_ENV: OUTPUTS_STAGED})
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert [n for n in names(folder) if not n.endswith(".partial")] == ["tiny.gguf", "tiny.yarn-2x.gguf"]
    again = write_modelfile(converted)
    assert again.modelfile.path.read_text().splitlines() == AS_IT_IS
    assert names(folder) == ["tiny.gguf", "tiny.yarn-2x.Modelfile", "tiny.yarn-2x.gguf"]  # the leftover removed


def test_the_modelfile_alone_is_refused_while_an_in_place_change_is_pending(converted: Path) -> None:
    undo_path(converted).write_bytes(b"")
    with pytest.raises(RecoveryError, match="--recover"):
        write_modelfile(converted)
    assert names(converted.parent) == ["tiny.gguf", "tiny.yarn-2x.gguf", undo_path(converted).name]
