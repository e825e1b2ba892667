"""Typed GGUF metadata values: llama.cpp checks each key's type strictly, so every value carries one."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

from yarn_cli.errors import InputError, NotGGUFError

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
    GGUFValueType.BOOL: "?",
}

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Value:
    """A typed scalar metadata value. llama.cpp checks types strictly, so the type is explicit."""

    type: GGUFValueType
    value: Scalar

    def pack(self, byteorder: str) -> bytes:
        """The value's GGUF encoding (type tag excluded)."""
        if self.type == GGUFValueType.STRING:
            data = str(self.value).encode("utf-8")
            return struct.pack(byteorder + "Q", len(data)) + data
        fmt = _SCALAR_FORMATS.get(self.type)
        if fmt is None:
            raise TypeError(f"cannot pack a {self.type.name} as a scalar value")
        return struct.pack(byteorder + fmt, self.value)

    def holds_exactly(self) -> bool:
        """Whether the type stores the value as it is (a UINT16 cannot hold 131,072, a BOOL no count)."""
        if self.type == GGUFValueType.STRING or isinstance(self.value, str):
            return self.type == GGUFValueType.STRING and isinstance(self.value, str)
        fmt = _SCALAR_FORMATS.get(self.type)
        if fmt is None or (self.type == GGUFValueType.BOOL) != isinstance(self.value, bool):
            return False
        try:
            (stored,) = struct.unpack("<" + fmt, struct.pack("<" + fmt, self.value))
        except struct.error:
            return False
        return bool(stored == self.value)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.name, "value": self.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Value:
        return cls(GGUFValueType[data["type"]], data["value"])


def pack_field(key: str, value: Value, byteorder: str) -> bytes:
    """A whole key/value record: key string, type tag, value."""
    key_bytes = key.encode("utf-8")
    return (
        struct.pack(byteorder + "Q", len(key_bytes))
        + key_bytes
        + struct.pack(byteorder + "I", int(value.type))
        + value.pack(byteorder)
    )


FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_ABOVE_ONE = float(np.nextafter(np.float32(1), np.float32(2)))  # the smallest float32 above 1


def f32(x: float) -> float:
    """Round to float32, as stored in the file, so written and re-read values compare equal.

    A number beyond float32's range becomes infinite, silently: callers that take numbers from
    the user check them first (``float32`` refuses to store one).
    """
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def uint32(x: int) -> Value:
    if not 0 <= int(x) < 2**32:
        raise InputError(f"{x:,} does not fit a GGUF uint32 (0 to {2**32 - 1:,})")
    return Value(GGUFValueType.UINT32, int(x))


def float32(x: float) -> Value:
    stored = f32(x)
    if math.isfinite(x) and not math.isfinite(stored):
        raise InputError(f"{x:g} does not fit a GGUF float32 (at most {FLOAT32_MAX:.7g})")
    return Value(GGUFValueType.FLOAT32, stored)


def string(x: str) -> Value:
    return Value(GGUFValueType.STRING, x)


def boolean(x: bool) -> Value:
    return Value(GGUFValueType.BOOL, bool(x))


# Reading: what a key's meaning allows. A value outside it is a damaged header, one clear error
# naming the key and the value, never a ValueError from int() or float() deep inside a command.


# The end of every damaged-value line: what it likely means, and what to do.
DAMAGED = "(the header may be damaged: download the file again, or re-create it with llama.cpp's convert script)"


class DamagedValueError(NotGGUFError):
    """A metadata key holds what its meaning rules out: text where a number belongs, a negative count..."""

    def __init__(self, key: str, raw: object, expected: str, where: object = None) -> None:
        line = f"{key} is {shown(raw)}; it must be {expected} {DAMAGED}"
        super().__init__(line if where is None else f"{where}: {line}")
        self.key, self.raw, self.expected = key, raw, expected

    def at(self, where: object) -> DamagedValueError:
        """The same error, its line starting with the file it was read from."""
        return DamagedValueError(self.key, self.raw, self.expected, where)


def shown(raw: object) -> str:
    """A stored value as an error line names it."""
    if isinstance(raw, bool):
        return f"{str(raw).lower()} (a boolean)"
    if isinstance(raw, float):
        return f"{raw:g}"
    if isinstance(raw, str):
        return repr(raw) if len(raw) <= 40 else repr(raw[:37] + "...")
    if isinstance(raw, list):
        return f"a list of {len(raw)} values"
    if raw is None:  # an array too long to decode
        return "a list"
    return str(raw)


def _count(key: str, raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, float) and raw.is_integer() and raw >= 0:  # a count stored as a float: NaN and inf are not
        return int(raw)
    raise DamagedValueError(key, raw, "a whole number, 0 or more")


def as_count(key: str, raw: object, *, per_layer: bool = False) -> int | None:
    """A count (tokens, layers, heads, dimensions): a whole number, 0 or more; None where the key is absent.

    ``per_layer`` also takes one count per layer (a few architectures store head counts so) and gives the largest.
    """
    if raw is None:
        return None
    if per_layer and isinstance(raw, list):
        return max((_count(key, item) for item in raw), default=None)
    return _count(key, raw)


def as_number(key: str, raw: object) -> float | None:
    """A number (a base, a factor): any integer or float, NaN and inf included (those are checked where used)."""
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    raise DamagedValueError(key, raw, "a number")


def as_text(key: str, raw: object) -> str | None:
    """A name (a scaling type): a string; None where the key is absent."""
    if raw is None or isinstance(raw, str):
        return raw
    raise DamagedValueError(key, raw, "text")


def as_flag(key: str, raw: object) -> bool | None:
    """A switch (add the BOS token?): a boolean; None where the key is absent."""
    if raw is None or isinstance(raw, bool):
        return raw
    raise DamagedValueError(key, raw, "true or false")
