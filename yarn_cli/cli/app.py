"""The ``yarn-cli`` application: command registration and the one place errors are rendered."""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import logging
import os
import signal
import sys
from typing import Annotated

import typer

from yarn_cli import __version__
from yarn_cli.cli import (
    chat_command,
    convert_command,
    inspect_command,
    passkey_command,
    perplexity_command,
    ruler_command,
    tune_command,
)
from yarn_cli.cli.helptext import Command
from yarn_cli.cli.render import err, show_error
from yarn_cli.errors import YarnCliError

app = typer.Typer(
    name="yarn-cli",
    help="Extend the context window of GGUF models with YaRN, and check that it works.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's help layout, with each option's value (yarn_cli.cli.helptext)
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"yarn-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what the library does.")] = False,
) -> None:
    """Extend the context window of GGUF models with YaRN, and check that it works."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(name)s: %(message)s")


app.command("inspect", cls=Command, epilog=inspect_command.EPILOG)(inspect_command.inspect_command)
app.command("convert", cls=Command, epilog=convert_command.EPILOG)(convert_command.convert_command)
app.command("chat", cls=Command, epilog=chat_command.EPILOG)(chat_command.chat_command)
app.command("passkey", cls=Command, epilog=passkey_command.EPILOG)(passkey_command.passkey_command)
app.command("perplexity", cls=Command, epilog=perplexity_command.EPILOG)(perplexity_command.perplexity_command)
app.command("ruler", cls=Command, epilog=ruler_command.EPILOG)(ruler_command.ruler_command)
app.command("tune", cls=Command, epilog=tune_command.EPILOG)(tune_command.tune_command)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point: every failure becomes one ``Error:`` line and a non-zero exit code.

    1 = the work failed, 2 = the command line was wrong, 130 = interrupted. Nothing escapes as
    a traceback: an exception the code did not foresee is still one line, which says how to
    see the traceback (``YARN_CLI_DEBUG=1``) and report it.
    """
    # clean up partial output on kill, or when the terminal closes (SIGHUP), as on Ctrl-C; a signal the
    # caller chose to ignore (nohup) stays ignored
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None and signal.getsignal(number) == signal.SIG_DFL:
            signal.signal(number, _terminate)
    # A crash inside a native library (llama.cpp, a GPU driver) still says where it happened; not
    # possible where stderr is no real file (an embedding host), which costs only that message.
    with contextlib.suppress(ValueError, OSError):
        faulthandler.enable()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C or end of input outside a command's own handling
        code = 130
    except Exception as exc:
        if os.environ.get("YARN_CLI_DEBUG", "").lower() in ("1", "true", "yes", "on"):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        message, code = error_line(exc)
        show_error(message)
        sys.exit(code)
    if code == 130:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            err.print("Interrupted; nothing was left half-written.")
    sys.exit(code if isinstance(code, int) else 0)


# What to do about the system errors a user can fix.
OS_ADVICE = {
    errno.ENOSPC: "; free some space, or write the output elsewhere",
    errno.EDQUOT: "; free some space, or write the output elsewhere",
    errno.EROFS: "; write the output elsewhere",
    errno.EACCES: "; check the file's and its folder's permissions",
    errno.EPERM: "; check the file's and its folder's permissions (and attributes: chattr)",
}


def error_line(exc: Exception) -> tuple[str, int]:
    """The one line and the exit code for a failure."""
    if isinstance(exc, YarnCliError):
        return str(exc), 1
    if isinstance(exc, OSError):
        # The system refused a read or write the code did not anticipate (read-only filesystem,
        # immutable file, I/O error): still one line, naming the file.
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}{OS_ADVICE.get(exc.errno or 0, '')}", 1
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        # Typer's usage errors (bad option values, missing arguments); typer keeps their class
        # private, so they are recognised by shape.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        return f"{exc.format_message()}{hint}", int(exc.exit_code)
    if isinstance(exc, MemoryError):
        return "out of memory; try a shorter context or length, or close other programs", 1
    detail = f": {exc}" if str(exc) else ""
    return (
        f"unexpected {type(exc).__name__}{detail}. This is a bug in yarn-cli: run the command again with "
        "YARN_CLI_DEBUG=1 to see where, and report it",
        1,
    )
