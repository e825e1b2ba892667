"""The scaling a local chat runs with: the file's own, llama.cpp's run-time flags, or ``--yarn auto``.

Decided once, from the opened model and what the user asked, before llama.cpp loads anything, so
that a contradiction (``--yarn dynamic`` with scaling flags) is one error and what the choice does
to the model (the YaRN factor ``--yarn auto`` picked, the sliding-window layers the flags miss) is
one note the command shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from yarn_cli.errors import InputError
from yarn_cli.model import Model
from yarn_cli.rope.architectures import flags_match_file
from yarn_cli.rope.scaling import Method, RuntimeScaling, ScalingOverride

# off: the file's scaling (or the flags'); auto: YaRN when -c outgrows an unscaled model;
# dynamic: the scale follows the conversation (llama.dynamic_yarn), so nothing is fixed here.
YarnMode = Literal["off", "auto", "dynamic"]
YARN_MODES: tuple[YarnMode, ...] = ("off", "auto", "dynamic")


@dataclass(frozen=True)
class ChatScaling:
    """The llama.cpp arguments for the first load, and the one sentence worth telling about them."""

    scaling: RuntimeScaling | None  # None: the model as its file says
    note: str | None = None


def choose_scaling(model: Model, override: ScalingOverride, *, yarn: YarnMode, n_ctx: int | None) -> ChatScaling:
    """What ``chat`` loads ``model`` with, given the scaling flags, the ``--yarn`` mode and ``-c``.

    Flags win over ``--yarn auto``, which only scales an unscaled model that ``-c`` outgrows;
    ``--yarn dynamic`` chooses its own scale, so it refuses the flags.
    """
    scaling = override.to_runtime()
    if yarn == "dynamic" and scaling is not None:
        raise InputError("--yarn dynamic chooses the scaling itself; drop --rope-scaling/--rope-scale/--rope-freq-base")
    if scaling is not None:
        if scaling.scales and not flags_match_file(model.architecture):
            return ChatScaling(
                scaling,
                f"{model.architecture}: llama.cpp applies --rope-scaling/--rope-scale to the global layers only; the "
                "sliding-window layers keep the file's scaling (a file converted by yarn-cli scales them all)",
            )
        return ChatScaling(scaling)
    factor = model.rope.auto_factor(n_ctx) if yarn == "auto" and n_ctx is not None else None
    if factor is None:
        return ChatScaling(None)
    return ChatScaling(
        model.rope.runtime(Method.YARN, factor),
        f"--yarn auto: YaRN x{factor:g} (original context {model.original_context}) for -c {n_ctx}",
    )
