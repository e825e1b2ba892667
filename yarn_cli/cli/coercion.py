"""Option values converted as click converts them, without a pydantic schema per parameter.

typer 0.29 converts every parameter's value through a pydantic ``TypeAdapter`` built on first use:
importing pydantic and building the adapters took 0.13 s of a 0.9 s one-shot chat here (23
parameters, cProfile). yarn-cli's options are plain ``str``, ``int``, ``float``, ``Path`` and lists
of ``str`` (and flags); those are converted here, with click's messages ("'abc' is not a valid integer."), and
anything else (an enum's choices, a parser, bounds) keeps typer's own conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

try:  # typer's own parts: where a later typer moves them, its conversion is used, only slower
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam
except ImportError:  # pragma: no cover
    RuntimeParam = None  # type: ignore[assignment,misc]

PLAIN = {str: "string", int: "integer", float: "float", Path: "path", bool: "boolean"}
# click's spelling of a boolean given as text (an environment variable, a flag's value)
BOOLEANS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
            "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}  # fmt: skip


class PlainValue(RuntimeParam or object):  # type: ignore[misc]
    """A plain value (or a list of them) converted by its type's constructor."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if get_origin(self.annotation) is list:
            (kind,) = get_args(self.annotation)
            return [_converted(kind, item, param, ctx) for item in value]
        return _converted(self.annotation, value, param, ctx)


def _converted(kind: type, value: Any, param: Any, ctx: Any) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is bool:
        if str(value).strip().lower() in BOOLEANS:
            return BOOLEANS[str(value).strip().lower()]
        raise BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise BadParameter(f"{value!r} is not a valid {PLAIN[kind]}.", ctx=ctx, param=param) from None


def plain(descriptor: Any) -> bool:
    """Whether typer's type descriptor is one converted here: a plain type with no constraint on it."""
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if get_origin(annotation) is list:
        args = get_args(annotation)
        annotation = args[0] if len(args) == 1 else None
    constrained = (
        descriptor.file_annotation is not None
        or info.parser is not None
        or getattr(info, "click_type", None) is not None
        or info.min is not None
        or info.max is not None
        or info.path_type is not None
        or info.exists
        or info.resolve_path
        or info.allow_dash
        or info.file_okay is not True
        or info.dir_okay is not True
        or info.writable
        or info.readable is not True
    )
    return annotation in PLAIN and not constrained


def convert_plainly(params: Sequence[Any]) -> None:
    """Give each plain parameter of a typer command the conversion here, before typer builds its own."""
    if RuntimeParam is None:  # pragma: no cover
        return
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is not None and getattr(param, "_runtime_param", False) is None and plain(descriptor):
            param._runtime_param = PlainValue(descriptor.parameter_info, descriptor.annotation)
