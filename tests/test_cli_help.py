"""Every command's --help: a flag shows no value, an option that takes one says what, names stay whole."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer
from helpers import sweep

from yarn_cli.cli.app import app
from yarn_cli.cli.helptext import VALUE_NAMES_BY_OPTION

_GROUP: Any = typer.main.get_command(app)
COMMANDS = ["", *_GROUP.list_commands(_GROUP.context_class(_GROUP))]  # the root, then every command
TYPE_TAGS = ["<bool>", "<str>", "<int>", "<float>", "<path>"]


@functools.cache
def help_text(command: str, columns: int) -> str:
    """``yarn-cli COMMAND --help`` on a terminal COLUMNS wide."""
    env = {k: v for k, v in os.environ.items() if k != "YARN_CLI_DEBUG"} | {"COLUMNS": str(columns), "NO_COLOR": "1"}
    args = [sys.executable, "-m", "yarn_cli", *command.split(), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def options(command: str) -> list[Any]:
    """The command's options, the help option included, as click holds them."""
    group: Any = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="yarn-cli", **group.context_settings)
    if command:
        cmd = group.get_command(ctx, command)
        ctx = cmd.context_class(cmd, info_name=command, parent=ctx, **cmd.context_settings)
        group = cmd
    return [p for p in group.get_params(ctx) if p.param_type_name == "option"]


def shown_value(text: str, option: Any) -> str:
    """What the help shows after an option's names: its value, or "" for none."""
    names = ", ".join(sorted(option.opts, key=lambda name: name.startswith("--")))
    if option.secondary_opts:
        names += " / " + ", ".join(option.secondary_opts)
    rows = [line.strip() for line in text.splitlines() if re.match(re.escape(names) + r"( |$)", line.strip())]
    assert len(rows) == 1, f"no row, or more than one, starts with the whole names {names!r}:\n{text}"
    rest = rows[0][len(names) :]
    return rest[1:].split("  ")[0] if rest.startswith(" ") and not rest.startswith("  ") else ""


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", sweep(COMMANDS, quick=2))
def test_help_has_no_type_tags(command: str, columns: int) -> None:
    text = help_text(command, columns)
    assert not [tag for tag in TYPE_TAGS if tag in text], text


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_flag_shows_no_value_and_an_option_what_it_takes(command: str, columns: int) -> None:
    text = help_text(command, columns)
    for option in options(command):
        value = shown_value(text, option)
        if option.is_flag or option.count:
            assert value == "", f"{option.opts} is a flag but shows {value!r}"
        else:
            assert value and not value.startswith("<"), f"{option.opts} takes a value but shows {value!r}"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_option_name_is_cut_at_80_columns(command: str) -> None:
    text = help_text(command, 80)
    assert "…" not in text
    for option in options(command):
        shown_value(text, option)  # its row starts with every one of its names, whole
        for name in option.opts + option.secondary_opts:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name


def test_the_values_named_per_option_are_all_in_use() -> None:
    names = {name for command in COMMANDS for option in options(command) for name in option.opts}
    assert set(VALUE_NAMES_BY_OPTION) <= names, set(VALUE_NAMES_BY_OPTION) - names


def test_examples_are_never_rewrapped() -> None:
    """An example is one line at any width, so it can be pasted whole."""
    line = "  yarn-cli convert model.gguf --factor 2 --modelfile # + model.yarn-2x.Modelfile for ollama create"
    assert line in help_text("convert", 80).splitlines()


def test_the_command_list_says_what_each_command_says_of_itself() -> None:
    """The root --help lists the commands without importing them: from summaries that must match their help."""
    from yarn_cli.cli.app import COMMANDS

    group: Any = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="yarn-cli", **group.context_settings)
    assert group.list_commands(ctx) == [entry.name for entry in COMMANDS]
    for entry in COMMANDS:
        own = group.get_command(ctx, entry.name).help.split("\n\n")[0]
        assert entry.summary == " ".join(own.split()), entry.name
    text = help_text("", 200)
    for entry in COMMANDS:
        assert f"{entry.name}  " in text and entry.summary in " ".join(text.split())


def test_a_mistyped_command_gets_the_one_meant(run_cli) -> None:
    result = run_cli("chta", "x")
    assert result.returncode == 2
    assert "No such command 'chta'. Did you mean 'chat'?" in result.stderr
