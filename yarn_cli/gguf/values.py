"""Typed GGUF metadata values: llama.cpp checks each key's type strictly, so every value carries one."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

from yarn_cli.errors import InputError

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
