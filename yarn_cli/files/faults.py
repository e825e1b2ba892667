"""Crash injection for the crash-safety tests, and nothing else.

The in-place header change names the steps after which a crash must still be recoverable, and
a new output the moment before it is renamed into place (what a killed run leaves behind).
When the environment asks for one of them, the process dies there at once, as on a power
cut: no ``finally`` block, no clean-up. In normal use the variable is unset and a crash
point is one dictionary lookup.
"""

from __future__ import annotations

import os
from collections.abc import Callable

CRASH_ENV = "_YARN_CLI_CRASH_AT"
CRASH_STEPS = ("after-undo-record", "after-shift", "mid-header")  # an in-place change's steps
OUTPUTS_STAGED = "outputs-staged"  # a new output written in full under its temporary name, not yet renamed
CRASH_EXIT = 86


def crash_point(step: str, last_act: Callable[[], None] | None = None) -> None:
    """Die here if the crash tests asked for ``step``, after ``last_act`` (a write cut short, say)."""
    if os.environ.get(CRASH_ENV) == step:
        if last_act is not None:
            last_act()
        os._exit(CRASH_EXIT)
