"""Bad input to any command: one clear line that says what to do, a non-zero exit, no traceback, nothing changed.

Every case runs the real command line on real files and checks, besides the message, that the
folder it works in is unchanged (hash).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from ggufs import write_tiny_llama
from helpers import TEXT, error_line, snapshot, sweep

from yarn_cli.cli import app as cli_app

# --- values that used to escape as tracebacks ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    sweep(
        [
            (["convert", "{m}", "out.gguf", "--factor", "1e10"], "is more than a GGUF file can state (4,294,967,295)"),
            (
                ["convert", "{m}", "out.gguf", "--context", "5000000000"],
                "5,000,000,000 tokens, is more than a GGUF file",
            ),
            (["convert", "{m}", "out.gguf", "--factor", "4", "--original-context", "0"], "--original-context must be"),
            (
                ["convert", "{m}", "out.gguf", "--factor", "4", "--original-context", "-8"],
                "between 1 and 4,294,967,295",
            ),
            (["convert", "{m}", "out.gguf", "--factor", "4", "--beta-fast", "0.5"], "must be larger than --beta-slow"),
            (["convert", "{m}", "out.gguf", "--factor", "4", "--beta-slow", "nan"], "--beta-slow must be a positive"),
            (["inspect", "{m}", "--factor", "4", "--beta-slow", "0"], "--beta-slow must be a positive number"),
            (["inspect", "{m}", "--factor", "4", "--beta-fast", "0"], "--beta-fast must be a positive number"),
            (["inspect", "{m}", "--factor", "4", "--beta-fast", "1", "--beta-slow", "2"], "must be larger than"),
        ]
    ),
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
    sweep(
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
        ]
    ),
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- a model path that names no file --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("model", "message"), [("", "the model path is empty"), (".", ". is a folder; give a GGUF")])
def test_an_empty_or_folder_model_path_is_one_line(run_cli, tmp_path: Path, model: str, message: str) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for args in (["inspect", model], ["convert", model, "--factor", "2"], ["chat", model, "-p", "hi"]):
        result = run_cli(*args, cwd=folder)
        assert result.returncode == 1
        assert message in error_line(result)
    assert list(folder.iterdir()) == []
