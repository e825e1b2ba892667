"""The quantization a file states (``general.file_type``), by llama.cpp's name for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gguf import Keys, LlamaFileType

from yarn_cli.gguf.header import GGUFHeader
from yarn_cli.gguf.values import as_count


@dataclass(frozen=True)
class FileType:
    number: int  # as stored
    name: str  # Q4_1, Q4_K_M, F16, BF16...

    def to_dict(self) -> dict[str, Any]:
        return {"file_type": self.number, "name": self.name}


def file_type(header: GGUFHeader) -> FileType | None:
    """``general.file_type`` and its name (gguf-py's MOSTLY_Q4_1 is llama.cpp's Q4_1); None where the file states none.

    llama.cpp's flag for a type it guessed is said; a type this gguf-py does not know is named by its number.
    """
    key = Keys.General.FILE_TYPE
    number = as_count(key, header.get(key))
    if number is None:
        return None
    guessed = bool(number & LlamaFileType.GUESSED) and number != LlamaFileType.GUESSED
    base = number & ~LlamaFileType.GUESSED if guessed else number
    try:
        name = LlamaFileType(base).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        name = f"type {base} (one this gguf-py does not name)"
    return FileType(number, name + (" (guessed)" if guessed else ""))
