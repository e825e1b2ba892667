"""Nothing lost: every output checked before any work, never an input, a device or a pipe; written whole or not at all.

The cases run the real command line on real files and check, besides the message, that the
input is unchanged (hash) and that no partial file is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from ggufs import write_tiny_llama
from helpers import TEXT, error_line, sha256, snapshot, sweep

from yarn_cli.errors import OutputError
from yarn_cli.files.staging import remove_leftovers, staging, write_atomically

# --- outputs checked before the run --------------------------------------------------------------


def shortest_run(command: str, text: Path = TEXT) -> list[str]:
    """The options of the smallest passkey or perplexity run on the tiny model."""
    return ["--lengths", "400", "--trials", "1"] if command == "passkey" else ["--text", str(text), "--contexts", "64"]


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    sweep(
        [
            ("passkey", "--json", "missing/run.json", "the folder missing does not exist"),
            ("passkey", "--csv", ".", "is a folder; give a file name"),
            ("perplexity", "--csv", "missing/run.csv", "the folder missing does not exist"),
            ("perplexity", "--json", ".", "is a folder"),
        ]
    ),
)
def test_long_runs_check_their_outputs_before_the_first_trial(
    run_cli, tiny_model: Path, command: str, option: str, value: str, message: str
) -> None:
    extra = shortest_run(command)
    result = run_cli(command, tiny_model, *extra, option, value)
    assert result.returncode == 1
    assert message in error_line(result)  # one line: no progress line, no trial was run


@pytest.mark.slow
def test_a_folder_that_refuses_files_is_found_before_the_run(run_cli, tiny_model: Path) -> None:
    result = run_cli(
        "passkey", tiny_model, "--lengths", "400", "--trials", "1", "-t", "2", "--json", "/sys/run.json"
    )  # /sys refuses new files, even to root
    assert "--json /sys/run.json: cannot write in /sys (Permission denied)" in error_line(result)


@pytest.mark.parametrize(
    ("command", "option", "target", "message"),
    sweep(
        [
            ("passkey", "--csv", "model", "--csv {path} is one of this run's inputs; choose another file name"),
            ("passkey", "--plot", "link to the model", "--plot {path} is one of this run's inputs"),
            ("perplexity", "--json", "text", "--json {path} is one of this run's inputs"),
            ("perplexity", "--csv", "model", "--csv {path} is one of this run's inputs"),
            ("perplexity", "--plot", "the --json file", "--json and --plot name the same file ({path})"),
        ]
    ),
)
def test_no_output_replaces_an_input(
    run_cli, tiny_model: Path, tmp_path: Path, command: str, option: str, target: str, message: str
) -> None:
    text = tmp_path / "text.txt"
    text.write_bytes(TEXT.read_bytes())
    (tmp_path / "link.gguf").symlink_to(tiny_model)
    path = {"model": tiny_model, "link to the model": tmp_path / "link.gguf", "text": text}.get(
        target, tmp_path / "run.json"
    )
    extra = shortest_run(command, text)
    before = {p: sha256(p) for p in (tiny_model, text)}
    result = run_cli(command, tiny_model, *extra, "--json", tmp_path / "run.json", option, path)
    assert result.returncode == 1
    assert message.format(path=path) in error_line(result)
    assert {p: sha256(p) for p in (tiny_model, text)} == before
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("command", sweep(["passkey", "perplexity"]))
def test_a_device_is_no_output_file(run_cli, tiny_model: Path, command: str) -> None:
    # /dev/full exists: a resume would read it forever, and the output renamed over it would replace the device
    extra = shortest_run(command)
    result = run_cli(command, tiny_model, *extra, "--json", "/dev/full")
    assert result.returncode == 1
    assert "--json /dev/full is not a regular file (a device, pipe or socket)" in error_line(result)
    assert Path("/dev/full").is_char_device()


def test_convert_never_replaces_a_pipe_even_with_force(run_cli, tiny_model: Path) -> None:
    fifo = tiny_model.parent / "out.gguf"
    os.mkfifo(fifo)
    result = run_cli("convert", tiny_model, fifo, "--factor", "2", "--force")
    assert result.returncode == 1
    assert f"the output {fifo} is not a regular file" in error_line(result)
    assert fifo.is_fifo()
    with pytest.raises(OutputError, match="not a regular file"):  # every writer, not only the CLI's checks
        write_atomically(fifo, b"{}")
    assert fifo.is_fifo()
    assert sorted(p.name for p in fifo.parent.iterdir()) == sorted([tiny_model.name, fifo.name])


# --- names as long as the filesystem takes (255 bytes) ------------------------------------------


@pytest.mark.slow
def test_a_model_whose_name_leaves_no_room_for_an_undo_record_is_still_usable(run_cli, tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / ("c" * 250 + ".gguf"))  # 255 bytes: model.gguf.yarn-cli-undo is not a name
    before = sha256(model)
    assert run_cli("inspect", model).returncode == 0
    scored = run_cli("perplexity", model, "--text", TEXT, "--contexts", "64", "-t", "2")
    assert scored.returncode == 0, scored.stderr
    chat = run_cli("chat", model, "-p", "the", "--temp", "0", "-n", "4", "-c", "256", "-t", "2")
    assert chat.returncode == 0, chat.stderr
    converted = run_cli("convert", model, "short.gguf", "--factor", "2", "-q")
    assert converted.returncode == 0, converted.stderr
    assert run_cli("convert", model, "--recover").returncode == 0
    assert sha256(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model.name, "short.gguf"])


def test_an_in_place_change_that_needs_an_undo_record_it_cannot_name_refuses(run_cli, tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / ("c" * 250 + ".gguf"))
    before = snapshot(tmp_path)
    result = run_cli("convert", model, "--in-place", "--factor", "2")
    assert result.returncode == 1
    assert error_line(result) == (
        f"Error: {model} cannot be changed in place: its name leaves no room for the undo record written beside it "
        "(.yarn-cli-undo makes it 269 bytes, more than the 255 its filesystem allows); give it a shorter name, "
        "or convert it to an OUTPUT instead of --in-place"
    )
    assert snapshot(tmp_path) == before


def test_a_default_output_name_too_long_for_the_filesystem_is_one_line(run_cli, tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / ("c" * 245 + ".gguf"))
    before = snapshot(tmp_path)
    result = run_cli("convert", model, "--factor", "2")
    assert result.returncode == 1
    assert error_line(result) == (
        f"Error: the output name {'c' * 245}.yarn-2x.gguf is 258 bytes, more than the 255 its filesystem allows; "
        "give a shorter OUTPUT"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("length", [237, 250, 255])
def test_outputs_named_up_to_the_filesystem_limit_are_written(run_cli, tiny_model: Path, length: int) -> None:
    name = "a" * (length - len(".gguf")) + ".gguf"
    result = run_cli("convert", tiny_model, name, "--factor", "2", "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == sorted([tiny_model.name, name])
    json_name = "é" * 125 + ".json"  # 255 bytes of UTF-8: a temporary name cut inside no character
    scored = run_cli("perplexity", tiny_model, "--text", TEXT, "--contexts", "64", "-t", "2", "--json", json_name)
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tiny_model.parent / json_name).read_text())["model"]
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == sorted([tiny_model.name, name, json_name])


# --- immutable files ----------------------------------------------------------------------------


@pytest.mark.slow
def test_an_immutable_output_is_refused_before_anything_is_written(run_cli, tiny_model: Path) -> None:
    folder = tiny_model.parent
    locked_files = [folder / "i.Modelfile", folder / "j.gguf"]
    for path in locked_files:
        path.write_text("keep\n")
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("this filesystem (or user) cannot mark a file immutable")
    try:
        before = snapshot(folder)
        modelfile = run_cli("convert", tiny_model, "i.gguf", "--factor", "2", "--modelfile", "--force")
        assert modelfile.returncode == 1
        assert error_line(modelfile) == (
            "Error: --modelfile i.Modelfile is marked immutable or append-only (chattr +i/+a) and cannot be "
            "replaced; clear the flag (chattr -i/-a) or choose another name"
        )
        output = run_cli("convert", tiny_model, "j.gguf", "--factor", "2", "--force")
        assert error_line(output) == (
            "Error: the output j.gguf is marked immutable or append-only (chattr +i/+a) and cannot be "
            "replaced; clear the flag (chattr -i/-a) or choose another name"
        )
        assert snapshot(folder) == before
    finally:
        for path in locked_files:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)


# --- all or nothing ------------------------------------------------------------------------------


def test_a_staged_link_or_a_live_write_is_no_leftover(tmp_path: Path) -> None:
    """What a sweep for a killed run's temporary files must never take: another run's staged outputs."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"the model")
    with staging() as stage:
        assert stage.link(tmp_path / "linked.gguf", source)  # a later split, staged as a hard link
        with stage.output(tmp_path / "written.gguf", mode=0o644) as (fd, _):
            os.write(fd, b"being written")
            remove_leftovers(tmp_path / "linked.gguf")
            remove_leftovers(tmp_path / "written.gguf")
    assert (tmp_path / "linked.gguf").read_bytes() == b"the model"
    assert (tmp_path / "written.gguf").read_bytes() == b"being written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked.gguf", "model.gguf", "written.gguf"]


def test_a_failed_write_leaves_nothing_and_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), staging() as stage, stage.output(target, mode=0o644) as (fd, _):
        os.write(fd, b"half a reco")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    write_atomically(target, b"new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
