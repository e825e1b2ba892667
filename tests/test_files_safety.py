"""Bad input and failures: one clear line, a non-zero exit, no traceback, and nothing lost.

Every case runs the real command line on real files and checks, besides the message, that the
input is unchanged (hash) and that no partial file is left behind.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from ggufs import write_tiny_llama
from helpers import error_line, interrupt_on_call, sha256, snapshot

from yarn_cli.cli import app as cli_app
from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.errors import OutputError
from yarn_cli.files.staging import remove_leftovers, staging, write_atomically
from yarn_cli.gguf.inplace import locked, undo_path

TEXT = Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt"


# --- values that used to escape as tracebacks ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "{m}", "out.gguf", "--factor", "1e10"], "is more than a GGUF file can state (4,294,967,295)"),
        (["convert", "{m}", "out.gguf", "--context", "5000000000"], "5,000,000,000 tokens, is more than a GGUF file"),
        (["convert", "{m}", "out.gguf", "--factor", "4", "--original-context", "0"], "--original-context must be"),
        (["convert", "{m}", "out.gguf", "--factor", "4", "--original-context", "-8"], "between 1 and 4,294,967,295"),
        (["convert", "{m}", "out.gguf", "--factor", "4", "--beta-fast", "0.5"], "must be larger than --beta-slow"),
        (["convert", "{m}", "out.gguf", "--factor", "4", "--beta-slow", "nan"], "--beta-slow must be a positive"),
        (["inspect", "{m}", "--factor", "4", "--beta-slow", "0"], "--beta-slow must be a positive number"),
        (["inspect", "{m}", "--factor", "4", "--beta-fast", "0"], "--beta-fast must be a positive number"),
        (["inspect", "{m}", "--factor", "4", "--beta-fast", "1", "--beta-slow", "2"], "must be larger than"),
    ],
)
def test_bad_values_get_one_line_and_change_nothing(run_cli, tiny_model: Path, args: list[str], message: str) -> None:
    before = snapshot(tiny_model.parent)
    result = run_cli(*[a.format(m=tiny_model) for a in args])
    assert result.returncode == 1
    assert message in error_line(result)
    assert snapshot(tiny_model.parent) == before


F32 = "a GGUF float32 can hold (3.402823e+38)"
TOO_BIG = "more than a GGUF file can state (4,294,967,295"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["convert", "{m}", "o.gguf", "--factor", "1e308", "--dry-run"],
            f"the target context, 1e+308 x 256 tokens, is {TOO_BIG}); choose a smaller --factor or --context",
        ),
        (
            ["perplexity", "{m}", "--text", "{t}", "--contexts", "128", "--compare", "yarn:1e308"],
            "--compare yarn:1e308 scales the 256-token context beyond what a GGUF file can state "
            "(4,294,967,295 tokens); give a smaller factor",
        ),
        (
            ["perplexity", "{m}", "--text", "{t}", "--contexts", "128", "--compare", "as-is,ntk:1e308"],
            "--compare ntk:1e308 scales the 256-token context beyond what a GGUF file can state "
            "(4,294,967,295 tokens); give a smaller factor",
        ),
        (
            ["passkey", "{m}", "--lengths", "400", "--compare", "yarn:1e39"],
            "--compare yarn:1e39 scales the 256-token context beyond what a GGUF file can state "
            "(4,294,967,295 tokens); give a smaller factor",
        ),
        (
            ["perplexity", "{m}", "--text", "{t}", "--contexts", "128", "--compare", "yarn:1.00000001"],
            "--compare yarn:1.00000001: the factor is 1 once stored as a GGUF float32, which is no scaling; "
            "give 1.0000001 or more",
        ),
        (
            ["inspect", "{m}", "--factor", "4", "--beta-fast", "1e308"],
            f"--beta-fast 1e+308 is more than {F32}; give a smaller number",
        ),
        (
            ["inspect", "{m}", "--factor", "4", "--beta-slow", "1e-50"],
            "--beta-slow 1e-50 is 0 once stored as a GGUF float32; give a larger number",
        ),
        (["inspect", "{m}", "--factor", "1e39"], f"--factor 1e+39 is more than {F32}; give a smaller factor"),
        (
            ["convert", "{m}", "o.gguf", "-f", "2", "--attn-factor", "1e39"],
            f"--attn-factor 1e+39 is more than {F32}; give a smaller number",
        ),
        (
            ["convert", "{m}", "o.gguf", "-f", "2", "--beta-fast", "1e39"],
            f"--beta-fast 1e+39 is more than {F32}; give a smaller number",
        ),
        (
            ["convert", "{m}", "o.gguf", "-f", "2", "--beta-fast", "1.00000001", "--beta-slow", "1"],
            "--beta-fast (1) must be larger than --beta-slow (1): YaRN keeps the pairs that turn more than "
            "beta_fast times and interpolates those that turn less than beta_slow times",
        ),
        (
            ["convert", "{m}", "o.gguf", "-f", "1.00000001"],
            "--factor 1.00000001 is 1 once stored as a GGUF float32, which is no scaling; give 1.0000001 or more",
        ),
        (
            ["convert", "{m}", "o.gguf", "-f", "1.001"],
            "--factor 1.001 leaves context_length at 256 (1.001 x 256 rounds to it); give a larger --factor, "
            "or --context N above 256",
        ),
    ],
)
def test_values_beyond_what_a_file_holds_are_refused_by_name(
    run_cli, tiny_model: Path, args: list[str], line: str
) -> None:
    """Numbers too large (or too close to 1) for the float32 or uint32 they end in: named, nothing written."""
    before = snapshot(tiny_model.parent)
    result = run_cli(*[a.format(m=tiny_model, t=TEXT) for a in args])
    assert result.returncode == 1
    assert error_line(result) == f"Error: {line}"
    assert "RuntimeWarning" not in result.stderr
    assert snapshot(tiny_model.parent) == before


def test_an_unforeseen_exception_is_one_line_that_says_how_to_see_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(**kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(cli_app, "app", broken)
    monkeypatch.delenv("YARN_CLI_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli_app.main()
    assert exited.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert lines[0].startswith("Error: unexpected ZeroDivisionError: float division by zero.")
    assert "YARN_CLI_DEBUG=1" in lines[0]
    monkeypatch.setenv("YARN_CLI_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):  # the traceback, for whoever asks for it
        cli_app.main()


def test_debug_shows_the_traceback(run_cli, tmp_path: Path) -> None:
    result = run_cli("inspect", tmp_path / "missing.gguf", env={"YARN_CLI_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "NotGGUFError" in result.stderr
    for off in ("0", "false", ""):
        assert "does not exist" in error_line(
            run_cli("inspect", tmp_path / "missing.gguf", env={"YARN_CLI_DEBUG": off})
        )


@pytest.mark.parametrize(
    ("code", "advice"),
    [(errno.ENOSPC, "; free some space, or write the output elsewhere"), (errno.EROFS, "; write the output elsewhere")],
)
def test_a_system_error_says_what_to_do(code: int, advice: str) -> None:
    message, status = cli_app.error_line(OSError(code, os.strerror(code), "/data/out.gguf"))
    assert (message, status) == (f"{os.strerror(code)} (/data/out.gguf){advice}", 1)


def test_a_path_with_a_line_break_is_still_one_line(run_cli, tmp_path: Path) -> None:
    result = run_cli("inspect", tmp_path / "a\nb.gguf")
    assert error_line(result) == f"Error: {tmp_path}/a\\nb.gguf does not exist"
    result = run_cli("convert", tmp_path / "gone.gguf", "--recover")
    assert result.returncode == 1 and "gone.gguf does not exist; --recover takes the model" in error_line(result)


def test_paths_and_keys_are_printed_literally(run_cli, tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "m[red]x[bold].gguf")
    result = run_cli("convert", model, "--factor", "2")
    assert result.returncode == 0, result.stderr
    assert "m[red]x[bold].yarn-2x.gguf" in result.stderr
    shown = run_cli("inspect", tmp_path / "m[red]x[bold].yarn-2x.gguf")
    assert "m[red]x[bold].yarn-2x.gguf" in shown.stdout.replace("\n", "")


# --- runs that resume ----------------------------------------------------------------------------


def shortest_run(command: str, text: Path = TEXT) -> list[str]:
    """The options of the smallest passkey or perplexity run on the tiny model."""
    return ["--lengths", "400", "--trials", "1"] if command == "passkey" else ["--text", str(text), "--contexts", "64"]


def passkey(run_cli, model: Path, *extra: str):
    return run_cli("passkey", model, "--lengths", "400", "--trials", "1", "-t", "2", *extra)


def test_a_resume_never_adopts_another_models_trials(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    x2 = convert_file(tiny_model, ConvertRequest(factor=2.0)).outputs[0].path
    x4 = convert_file(tiny_model, ConvertRequest(factor=4.0)).outputs[0].path
    assert x2.stat().st_size == x4.stat().st_size  # the old identity, (size, architecture), was the same
    first = passkey(run_cli, x2, "--json", "run.json")
    assert first.returncode == 0, first.stderr
    record = tmp_path / "run.json"
    saved = record.read_bytes()
    assert json.loads(saved)["model"]["header_sha256"]
    other = passkey(run_cli, x4, "--json", "run.json")
    assert other.returncode == 1
    assert "holds a run of another model" in error_line(other)
    reseeded = passkey(run_cli, x2, "--json", "run.json", "--seed", "5")
    assert "other --seed, --depths or answer length" in error_line(reseeded)
    assert record.read_bytes() == saved
    resumed = passkey(run_cli, x2, "--json", "run.json")
    assert resumed.returncode == 0 and "1 trials already done" in resumed.stderr


def test_a_damaged_run_is_refused_before_any_trial(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    assert passkey(run_cli, tiny_model, "--json", "run.json").returncode == 0
    record = tmp_path / "run.json"
    good = json.loads(record.read_text())
    damages = [
        ("index", "x"), ("correct", "no"), ("depth", float("nan")), ("depth", "deep"), ("length", True),
        ("answer", 1.5), ("key", None),
    ]  # fmt: skip
    for field, value in damages:
        run = json.loads(json.dumps(good))
        run["trials"][0][field] = value
        record.write_text(json.dumps(run))
        result = passkey(run_cli, tiny_model, "--json", "run.json", "--lengths", "400,500")  # one more length to run
        assert result.returncode == 1, (field, value)
        assert f"run.json exists but is not a passkey run (a trial's '{field}' is " in error_line(result)
        assert record.read_text() == json.dumps(run)  # refused before a trial ran: the record as it was
    record.write_text(json.dumps(dict(good, model=[1])))
    assert "is not a passkey run (its model is [1])" in error_line(passkey(run_cli, tiny_model, "--json", "run.json"))


def test_a_file_converted_in_place_is_another_model_to_a_resume(run_cli, tiny_model: Path) -> None:
    assert passkey(run_cli, tiny_model, "--json", "run.json").returncode == 0
    assert run_cli("convert", tiny_model, "--in-place", "--factor", "2").returncode == 0
    assert "holds a run of another model" in error_line(passkey(run_cli, tiny_model, "--json", "run.json"))


def test_perplexity_records_the_same_identity(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    result = run_cli("perplexity", tiny_model, "--text", TEXT, "--contexts", "64", "--json", "p.json")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "p.json").read_text())
    passkey(run_cli, tiny_model, "--json", "k.json")
    assert record["model"]["header_sha256"] == json.loads((tmp_path / "k.json").read_text())["model"]["header_sha256"]


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        ("passkey", "--json", "missing/run.json", "the folder missing does not exist"),
        ("passkey", "--csv", ".", "is a folder; give a file name"),
        ("perplexity", "--csv", "missing/run.csv", "the folder missing does not exist"),
        ("perplexity", "--json", ".", "is a folder"),
    ],
)
def test_long_runs_check_their_outputs_before_the_first_trial(
    run_cli, tiny_model: Path, command: str, option: str, value: str, message: str
) -> None:
    extra = shortest_run(command)
    result = run_cli(command, tiny_model, *extra, option, value)
    assert result.returncode == 1
    assert message in error_line(result)  # one line: no progress line, no trial was run


def test_a_folder_that_refuses_files_is_found_before_the_run(run_cli, tiny_model: Path) -> None:
    result = passkey(run_cli, tiny_model, "--json", "/sys/run.json")  # refuses new files, even to root
    assert "--json /sys/run.json: cannot write in /sys (Permission denied)" in error_line(result)


@pytest.mark.parametrize(
    ("command", "option", "target", "message"),
    [
        ("passkey", "--csv", "model", "--csv {path} is one of this run's inputs; choose another file name"),
        ("passkey", "--plot", "link to the model", "--plot {path} is one of this run's inputs"),
        ("perplexity", "--json", "text", "--json {path} is one of this run's inputs"),
        ("perplexity", "--csv", "model", "--csv {path} is one of this run's inputs"),
        ("perplexity", "--plot", "the --json file", "--json and --plot name the same file ({path})"),
    ],
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


@pytest.mark.parametrize(("model", "message"), [("", "the model path is empty"), (".", ". is a folder; give a GGUF")])
def test_an_empty_or_folder_model_path_is_one_line(run_cli, tmp_path: Path, model: str, message: str) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for args in (["inspect", model], ["convert", model, "--factor", "2"], ["chat", model, "-p", "hi"]):
        result = run_cli(*args, cwd=folder)
        assert result.returncode == 1
        assert message in error_line(result)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["passkey", "perplexity"])
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


# --- --modelfile: checked before the model is written -------------------------------------------


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


# --- in-place changes: one at a time, never by a dry run ----------------------------------------


def test_a_second_in_place_change_refuses_while_the_first_holds_the_file(run_cli, tiny_model: Path) -> None:
    before = sha256(tiny_model)
    with locked(tiny_model, exclusive=True):  # as a first `convert --in-place` does, throughout
        second = run_cli("convert", tiny_model, "--in-place", "--factor", "2")
        recovery = run_cli("convert", tiny_model, "--recover")
        undo_path(tiny_model).write_bytes(b"")  # the first one's undo record, mid-change
        reader = run_cli("chat", tiny_model, "-p", "hi")
        shown = run_cli("inspect", tiny_model)
    for result in (second, recovery, reader):
        assert result.returncode == 1
        assert "is being changed in place by another yarn-cli right now" in error_line(result)
    assert shown.returncode == 0 and "Warning:" in shown.stderr and "being changed in place" in shown.stderr
    assert sha256(tiny_model) == before


def test_a_dry_run_never_recovers_or_writes(run_cli, tiny_model: Path) -> None:
    undo_path(tiny_model).write_bytes(b"YARN-CLI-UNDO 1\n{}\n")  # an interrupted change's record
    before = snapshot(tiny_model.parent)
    result = run_cli("convert", tiny_model, "--factor", "2", "--dry-run")
    assert result.returncode == 1 and "--recover" in error_line(result)
    assert snapshot(tiny_model.parent) == before


def test_inspect_warns_about_an_interrupted_change_and_still_shows_the_file(run_cli, tiny_model: Path) -> None:
    undo_path(tiny_model).write_bytes(b"")
    result = run_cli("inspect", tiny_model)
    assert result.returncode == 0
    assert "Warning: an in-place change of" in result.stderr and "--recover" in result.stderr
    assert "Context length  256" in result.stdout


# --- all or nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize("calls", [1, 2, 3])
def test_an_interrupted_split_conversion_leaves_no_split_behind(tmp_path: Path, calls: int) -> None:
    first = write_tiny_llama(tmp_path / "tiny.gguf", split_max_tensors=8)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after the first split, or during it
        convert_file(first, ConvertRequest(factor=2.0), progress=interrupt_on_call(calls))
    assert snapshot(tmp_path) == before  # no output split, no partial file


def test_a_failed_split_conversion_leaves_no_split_behind(tmp_path: Path) -> None:
    first = write_tiny_llama(tmp_path / "tiny.gguf", split_max_tensors=8)
    (tmp_path / "tiny.yarn-2x-00003-of-00003.gguf").mkdir()  # the last output cannot be replaced
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="is a folder"):  # found before anything is written
        convert_file(first, ConvertRequest(factor=2.0), overwrite=True)
    assert snapshot(tmp_path) == before


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
