"""The ``yarn-cli`` application: the commands, loaded when used, and the one place errors are rendered.

A command's module (and the libraries it needs: llama.cpp, numpy, gguf, rich) is imported only when
that command runs or shows its help, so ``--version`` and the root ``--help`` cost little more than
the Python interpreter and typer. The root ``--help`` lists the commands from ``COMMANDS`` below,
whose summaries a test holds equal to each command's own help.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import faulthandler
import gc
import importlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from yarn_cli import __version__
from yarn_cli.errors import YarnCliError


@dataclass(frozen=True)
class CommandEntry:
    """A command as the root knows it before its module is imported."""

    name: str
    summary: str  # the first paragraph of its help, as the root --help lists it
    runs_models: bool  # loads llama.cpp, whose libraries must be loaded before numpy's (yarn_cli.llama)

    @property
    def module(self) -> str:
        return f"yarn_cli.cli.{self.name}_command"


COMMANDS = (
    CommandEntry(
        "inspect",
        "Show a GGUF model's context, RoPE settings, scaling keys, tokenizer, chat template and KV-cache needs.",
        runs_models=False,
    ),
    CommandEntry(
        "convert",
        "Write YaRN (or NTK-by-parts, linear, NTK-aware, or no scaling) into a GGUF file's metadata.",
        runs_models=False,
    ),
    CommandEntry("chat", "Chat with a GGUF model on the CPU or GPU through llama.cpp.", runs_models=True),
    CommandEntry(
        "passkey",
        "Hide a pass key in filler text and check, per length and variant, that the model finds it.",
        runs_models=True,
    ),
    CommandEntry(
        "perplexity",
        "Score a long text at several context lengths, under several RoPE scalings.",
        runs_models=True,
    ),
    CommandEntry(
        "ruler",
        "Run RULER's synthetic tasks per length and variant, and find the context that really holds.",
        runs_models=True,
    ),
    CommandEntry(
        "tune",
        "Measure the ways to reach a longer context on this model, and say which to use.",
        runs_models=True,
    ),
)


class LazyCommands(TyperGroup):
    """The root group: each command built from its module the first time it is asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Any] = {}

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from yarn_cli.cli.coercion import convert_plainly

        convert_plainly(self.get_params(ctx))
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def list_commands(self, ctx: Any) -> list[str]:
        return [entry.name for entry in COMMANDS]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """typer's, with its "Did you mean" drawn from ``COMMANDS`` (typer's own reads the commands it holds,
        which are none until one is asked for)."""
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:
            message = getattr(exc, "message", None)
            if isinstance(message, str) and args and "Did you mean" not in message:
                matches = difflib.get_close_matches(args[0], [entry.name for entry in COMMANDS])
                if matches:
                    exc.message = f"{message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"  # type: ignore[attr-defined]
            raise

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = next((e for e in COMMANDS if e.name == cmd_name), None)
        if entry is None:
            return None
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = _build(entry)
            _start_up_done()
        return self._loaded[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list from the summaries, without importing a command."""
        with formatter.section("Commands"):
            formatter.write_dl([(entry.name, entry.summary) for entry in COMMANDS])


def _start_up_done() -> None:
    """Where ``yarn_cli.__main__`` paused the garbage collector for start-up: what start-up made lives on, so it is
    left out of every later collection (``gc.freeze``), and collection resumes. A program that imports this
    module keeps its collector as it is."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _build(entry: CommandEntry) -> Any:
    """The click command of ``entry``, from its module's ``NAME_command`` function and ``EPILOG``."""
    if entry.runs_models:
        import yarn_cli.llama  # noqa: F401  (llama.cpp's libraries before numpy's)
    from yarn_cli.cli.helptext import Command

    module = importlib.import_module(entry.module)
    single = typer.Typer(pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None)
    single.command(entry.name, cls=Command, epilog=module.EPILOG)(getattr(module, f"{entry.name}_command"))
    return typer.main.get_command(single)


app = typer.Typer(
    name="yarn-cli",
    help="Extend the context window of GGUF models with YaRN, and check that it works.",
    cls=LazyCommands,
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
        from yarn_cli.cli.render import show_error

        message, code = error_line(exc)
        show_error(message)
        sys.exit(code)
    if code == 130:
        from yarn_cli.cli.render import err

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
