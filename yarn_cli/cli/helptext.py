"""What each command's help says, and the two places it is shown: ``--help`` and docs/cli.md.

One description per parameter (its names, the value it takes, its default, its help) feeds both,
so the reference in the docs cannot drift from the terminal. ``--help`` uses click's definition
lists rather than typer's rich tables: a rich table shares a narrow terminal among its columns and
cuts option names short (``--allow-shorter-…`` at 80 columns), and typer 0.29 tags every option,
flags included, with its Python type (``<bool>``, ``<float>``); here a flag shows no value and an
option that takes one shows what it takes (``--factor S``, ``--json FILE``).
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import typer
from typer.core import TyperCommand

from yarn_cli.cli.coercion import convert_plainly

# What an option takes when it names no metavar of its own: by its name, the same in every command
# (the letters are those the help texts use: S the scale factor, L the original context)...
VALUE_NAMES_BY_OPTION = {
    "--factor": "S",
    "--rope-scale": "S",
    "--original-context": "L",
    "--yarn-orig-ctx": "L",
    "--lengths": "LIST",
    "--contexts": "LIST",
    "--compare": "LIST",
    "--tasks": "LIST",
    "--depths": "SPEC",
    "--rope-scaling": "[none|linear|yarn]",
    "--yarn": "[off|auto|dynamic]",
}
# ...else by its type (an enum shows its choices).
VALUE_NAMES_BY_TYPE: dict[type, str] = {int: "N", float: "X", str: "TEXT", Path: "FILE"}
LABEL_COLUMN = 30  # wider names go on a line of their own, as in click
ARGUMENTS = "Arguments"
OPTIONS = "Options"


@dataclass(frozen=True)
class ParamHelp:
    """One argument or option as its help shows it."""

    names: tuple[str, ...]  # "-f", "--factor" (short ones first); an argument's metavar ("INPUT")
    negative: tuple[str, ...]  # a boolean pair's other half: "--not-finetuned"
    value: str | None  # what it takes ("S", "FILE", "[yarn|linear|ntk|none]"); None for a flag or an argument
    default: str | None
    help: str
    required: bool
    panel: str  # "Arguments", "Options", or the group it is shown in ("Served models")

    @property
    def label(self) -> str:
        """The left column of --help: ``-f, --factor S``, ``--finetuned / --not-finetuned``."""
        label = ", ".join(self.names) + (f" {self.value}" if self.value else "")
        return " / ".join([label, ", ".join(self.negative)]) if self.negative else label

    @property
    def extras(self) -> str:
        """What follows the help: ``[default: yarn]``, ``[required]``."""
        extras = ([f"default: {self.default}"] if self.default is not None else []) + (
            ["required"] if self.required else []
        )
        return f"[{'; '.join(extras)}]" if extras else ""


def value_name(param: Any) -> str | None:
    """What an option takes: its own metavar, the choices of an enum, or a name for its type."""
    if param.param_type_name != "option" or param.is_flag or param.count:
        return None
    if param.metavar:
        return str(param.metavar)
    for opt in param.opts:
        if opt in VALUE_NAMES_BY_OPTION:
            return VALUE_NAMES_BY_OPTION[opt]
    annotation = param.type_descriptor.annotation
    for inner in get_args(annotation):  # list[X]: what one occurrence takes
        annotation = inner
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "[" + "|".join(str(choice.value) for choice in annotation) + "]"
    for kind, name in VALUE_NAMES_BY_TYPE.items():
        if isinstance(annotation, type) and issubclass(annotation, kind):
            return name
    return str(getattr(annotation, "__name__", "VALUE")).upper()


def default_text(param: Any) -> str | None:
    """The default the help shows, as typer would show it, or None where it shows none."""
    if isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if not param.show_default or default is None or default in ((), []):
        return None
    if param.param_type_name == "option" and param.is_flag:
        if not param.secondary_opts:
            return None  # a plain flag is off unless given
        return (param.opts if default else param.secondary_opts)[0].lstrip("-")
    if isinstance(default, Enum):
        return str(default.value)
    if callable(default):
        return "(dynamic)"
    return str(default)


def describe(param: Any) -> ParamHelp:
    """The help of one click parameter."""
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        return ParamHelp(
            names=(name + ("..." if param.nargs != 1 else ""),),
            negative=(),
            value=None,
            default=default_text(param),
            help=param.help or "",
            required=param.required,
            panel=getattr(param, "rich_help_panel", None) or ARGUMENTS,
        )
    return ParamHelp(
        names=tuple(sorted(param.opts, key=lambda opt: opt.startswith("--"))),
        negative=tuple(param.secondary_opts),
        value=value_name(param),
        default=default_text(param),
        help=param.help or "",
        required=param.required,
        panel=getattr(param, "rich_help_panel", None) or OPTIONS,
    )


def panels(command: Any, ctx: Any) -> dict[str, list[ParamHelp]]:
    """A command's parameters by the heading they are shown under, Arguments and Options first."""
    grouped: dict[str, list[ParamHelp]] = {ARGUMENTS: [], OPTIONS: []}
    for param in command.get_params(ctx):
        if not getattr(param, "hidden", False):
            described = describe(param)
            grouped.setdefault(described.panel, []).append(described)
    return {name: params for name, params in grouped.items() if params}


class Command(TyperCommand):
    """A typer command whose --help shows each parameter as ``describe`` says, and examples as written; its
    plain option values are converted without pydantic (``coercion``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        convert_plainly(self.get_params(ctx))
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        if self.help:
            formatter.write_paragraph()
            width = formatter.width - formatter.current_indent - 2
            text = "\n\n".join("\n".join(_wrap(p, width)) for p in _paragraphs(self.help))
            formatter.write(textwrap.indent(text, " " * (formatter.current_indent + 2)) + "\n")

    def format_options(self, ctx: Any, formatter: Any) -> None:
        for name, params in panels(self, ctx).items():
            with formatter.section(name):
                formatter.write(_rows(params, formatter.width - formatter.current_indent, formatter.current_indent))

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        """The examples one per line, as written: never rewrapped, so each can be pasted whole."""
        if self.epilog:
            formatter.write_paragraph()
            formatter.write("".join(f"{line.rstrip()}\n" for line in self.epilog.splitlines() if line.strip()))


def _rows(params: list[ParamHelp], width: int, indent: int) -> str:
    """Names on the left, whole; help on the right, wrapped between words only (``--rope-scale`` stays one)."""
    column = min(max(len(p.label) for p in params), LABEL_COLUMN) + 2
    lines = []
    for param in params:
        text = _wrap(param.help, width - column)
        if param.extras:
            if text[-1] and len(text[-1]) + 2 + len(param.extras) <= width - column:
                text[-1] = f"{text[-1]}  {param.extras}"
            else:
                text.append(param.extras)
        if len(param.label) + 2 > column:  # a long name on a line of its own, its help below
            lines += [param.label, *(" " * column + line for line in text)]
        else:
            lines += [param.label.ljust(column) + text[0], *(" " * column + line for line in text[1:])]
    return "".join(" " * indent + line.rstrip() + "\n" for line in lines)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, max(width, 20), break_on_hyphens=False, break_long_words=False) or [""]


# -- docs/cli.md ------------------------------------------------------------------------------------


def reference(app: typer.Typer, program: str = "yarn-cli") -> str:
    """The CLI reference in Markdown, from the command objects (independent of the terminal width)."""
    group: Any = typer.main.get_command(app)
    root = group.context_class(group, info_name=program, **group.context_settings)
    commands = [(name, group.get_command(root, name)) for name in group.list_commands(root)]
    lines = [
        "# Command-line reference",
        "",
        "Generated from the commands by `python docs/cli_reference.py`: edit the help texts in",
        "`yarn_cli/cli/` and run it again (`tests/test_docs.py` fails while this page is out of date).",
        "",
        *_prose(group.help),
        _usage(group, root),
        "",
        "| command | what it does |",
        "|---|---|",
        *(f"| [`{name}`](#{program}-{name}) | {_cell(_first_paragraph(cmd.help))} |" for name, cmd in commands),
        "",
        *_parameter_tables(panels(group, root)),
    ]
    for name, command in commands:
        ctx = command.context_class(command, info_name=name, parent=root, **command.context_settings)
        lines += [f"## {program} {name}", "", _usage(command, ctx), "", *_prose(command.help)]
        lines += _parameter_tables(panels(command, ctx))
        examples = list(_examples(command.epilog))
        if examples:
            lines += ["Examples:", "", "```bash", *examples, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _usage(command: Any, ctx: Any) -> str:
    return f"`{command.get_usage(ctx).removeprefix('Usage: ').strip()}`"


def _parameter_tables(grouped: dict[str, list[ParamHelp]]) -> list[str]:
    """One table per heading: arguments by name, options with the value each takes."""
    lines: list[str] = []
    for name, params in grouped.items():
        arguments = name == ARGUMENTS
        columns = ["argument", "default", "help"] if arguments else ["option", "value", "default", "help"]
        lines += [f"**{name}**", "", _table_row(columns), _table_row(["---"] * len(columns))]
        for p in params:
            names = _code(p.names) + (f" / {_code(p.negative)}" if p.negative else "")
            value = [] if arguments else [_code([p.value])]
            lines.append(_table_row([names, *value, _code([p.default]), _cell(p.help + _required(p))]))
        lines.append("")
    return lines


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _required(param: ParamHelp) -> str:
    return " (required)" if param.required else ""


def _code(texts: Iterable[str | None]) -> str:
    """Code spans in a table cell: a pipe is escaped even there; nothing else is."""
    spans = [text.replace("|", "\\|") for text in texts if text]
    return ", ".join(f"`{span}`" for span in spans)


def _cell(text: str) -> str:
    """Prose on one line of a table cell, shown as written (``<stem>`` is no HTML tag)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _paragraphs(text: str | None) -> list[str]:
    """A docstring's paragraphs, each on one line."""
    return [" ".join(p.split()) for p in inspect.cleandoc(text or "").split("\n\n") if p.strip()]


def _prose(text: str | None) -> list[str]:
    """A docstring as Markdown paragraphs, each followed by a blank line."""
    return [line for p in _paragraphs(text) for line in (p.replace("<", "&lt;"), "")]


def _first_paragraph(text: str | None) -> str:
    return (_paragraphs(text) or [""])[0]


def _examples(epilog: str | None) -> Iterator[str]:
    """The command lines of an epilog, without its ``Examples:`` heading."""
    for line in (epilog or "").splitlines():
        command = re.sub(r"^Examples?:\s*", "", line.strip())
        if command:
            yield command
