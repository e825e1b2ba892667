"""Shared rendering for the commands: consoles, errors, sizes, progress, JSON."""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from yarn_cli.default_model import DEFAULT_NAME
from yarn_cli.errors import InputError
from yarn_cli.files.checks import check_writable, same_file
from yarn_cli.files.staging import write_atomically
from yarn_cli.gguf.values import Value

if TYPE_CHECKING:
    from rich.progress import Progress

    from yarn_cli.evals.estimate import Estimate

# Data (tables, JSON, replies) goes to stdout; status, warnings and progress to stderr.
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def say(text: str) -> None:
    """A status line on stderr, printed literally: a path or a key with [brackets] is not rich markup."""
    err.print(text, markup=False, soft_wrap=True)


def show_error(message: str) -> None:
    """The one line a failure prints: ``Error: what is wrong and what to do``."""
    # one line, even when a path in it holds a line break
    one_line = message.replace("\n", "\\n").replace("\r", "\\r")
    err.print(f"[bold red]Error:[/] {escape(one_line)}", soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


def check_run_outputs(
    json_path: Path | None,
    csv_path: Path | None,
    plot: Path | None,
    prompts: Path | None = None,
    inputs: Sequence[str | Path | None] = (),
) -> None:
    """A long run's output files, checked before it starts: a bad path never costs a finished run, and no
    output replaces one of the run's own inputs (the model, the text, the tokenizer) or another output."""
    named = (("--json", json_path), ("--csv", csv_path), ("--plot", plot), ("--prompts", prompts))
    given = [(option, path) for option, path in named if path]
    for option, path in given:
        check_writable(path, option)
        for source in inputs:
            if source is not None and str(source) != DEFAULT_NAME and same_file(path, Path(source)):
                raise InputError(f"{option} {path} is one of this run's inputs; choose another file name")
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1 :]:
            if same_file(path, other_path):
                raise InputError(f"{option} and {other} name the same file ({path}); give each its own")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install matplotlib (or the plot extra)") from None


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure as a PNG, written whole or not at all, like every other output."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())
    say(f"Plot written to {path}")


def mib(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 2**30:
        return f"{n / 2**30:,.2f} GiB"
    if n < 2**19:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB"


def show_value(value: Value | None) -> str:
    if value is None:
        return "(absent)"
    v = value.value
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str):
        return repr(v) if len(v) <= 60 else repr(v[:57] + "...")
    return str(v).lower() if isinstance(v, bool) else str(v)


def strict_json(data: Any) -> Any:
    """``data`` with every NaN or infinity as the string "nan", "inf" or "-inf": JSON has no such numbers.

    A damaged header can hold them (a NaN freq_base); the output stays valid JSON and still says what is there.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(strict_json(data), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


@contextmanager
def byte_progress(description: str, *, enabled: bool) -> Iterator[Any]:
    """A bytes progress bar on stderr; yields ``update(done, total)``."""
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def duration(seconds: float) -> str:
    """A time span as people say it: 40 s, 21 min, 3 h 10 min, 2 days 4 h."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def plan_line(what: str, tokens: int, estimate: Estimate | None) -> str:
    """What a run will do, and how long it should take here: said before its first prompt."""
    line = f"Plan: {what}, {tokens:,} prompt tokens to evaluate"
    if estimate is None:
        return f"{line}."
    return f"{line}; about {duration(estimate.total_seconds)} here (measured: {estimate.speed.measured})."


class WorkProgress:
    """Progress of a long evaluation: on a terminal a bar with ETA; in a log, one plain line per tenth.

    Long evaluations run under nohup, CI or a pipe, where a redrawn bar would be invisible. With an
    estimate, the time left is the estimate's, scaled by how the run's real time compares with it so
    far (a later prompt costs more per token than an earlier, shorter one); without, it is the token
    rate's.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.total = 0
        self.done = 0
        self.start = time.monotonic()
        self.estimate: Estimate | None = None
        self._next = 0.1
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> WorkProgress:
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
            )
            self._bar = Progress(*columns, console=err, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("", total=None, note=self.unit, left="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, total: int, estimate: Estimate | None = None) -> None:
        """Start counting towards ``total`` (again, for a run in stages: each stage its own bar and ETA)."""
        self.total = total
        self.done = 0
        self.estimate = estimate
        self._next = 0.1
        self.start = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, total=total, completed=0, left=self._left_text(0.0))

    def seconds_left(self, elapsed: float) -> float | None:
        if self.estimate is not None:
            return self.estimate.seconds_left(self.done, elapsed)
        if not self.done or not self.total:
            return None
        return elapsed / self.done * (self.total - self.done)

    def _left_text(self, elapsed: float) -> str:
        left = self.seconds_left(elapsed)
        return f"about {duration(left)} left" if left is not None else ""

    def advance(self, n: int, label: str, note: str | None = None) -> None:
        self.done += n
        elapsed = time.monotonic() - self.start
        if self._bar is not None:
            self._bar.update(
                self._task, advance=n, description=label, note=note or self.unit, left=self._left_text(elapsed)
            )
            return
        if not self.total:
            return
        fraction = self.done / self.total
        if fraction + 1e-9 >= self._next:
            left = self.seconds_left(elapsed) or 0.0
            err.print(
                f"{fraction:4.0%}  {self.done:,}/{self.total:,} {self.unit}  {label}{f': {note}' if note else ''}  "
                f"{elapsed:,.0f} s elapsed, about {left:,.0f} s left",
                soft_wrap=True,
            )
            while self._next <= fraction + 1e-9:
                self._next += 0.1
