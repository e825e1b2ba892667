"""RULER's haystacks: the repeated noise sentences, and an essay text given by the user.

RULER's essay haystack is Paul Graham's essays (downloaded); here it is any long text
(``--haystack FILE``), cut into words as RULER cuts it (``re.sub(r"\\s+", " ", text).split(" ")``)
and into sentences, where needles go. RULER splits sentences with nltk's punkt, whose English
model is a separate download; this splitter ends a sentence at ``.``, ``!`` or ``?`` (and the quotes
or brackets that close it) before a space and a capital letter, a digit or an opening quote, except
after an honorific or an initial. Where the two differ, only the places a needle may go move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from yarn_cli.errors import InputError

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# Words that end in a period without ending a sentence (case-insensitive), and single letters.
_ABBREVIATED = "mr mrs ms dr st jr sr prof rev gen col capt lt sgt hon messrs mme mlle vs etc e.g i.e no vol fig cf al"
ABBREVIATIONS = frozenset(_ABBREVIATED.split(" "))
_BOUNDARY = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*(?= +["'\u201c\u2018(\[]?[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
    """``text`` (single-spaced, as the haystack's words joined) as sentences, joined back by single spaces."""
    sentences = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        word = text[start : match.start()].rsplit(" ", 1)[-1].lstrip("\"'(\u201c\u2018[")
        if match.group().startswith(".") and (word.lower() in ABBREVIATIONS or len(word) == 1):
            continue
        end = match.end()
        sentences.append(text[start:end])
        start = end + 1  # the one space after it
    if start < len(text):
        sentences.append(text[start:])
    return sentences


@dataclass(frozen=True)
class Essay:
    """The essay haystack: the user's text as RULER's words."""

    source: str  # the file's name, for messages and records
    text: str

    @cached_property
    def words(self) -> list[str]:
        return re.sub(r"\s+", " ", self.text).split(" ")


def read_essay(path: Path) -> Essay:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read --haystack {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"--haystack {path} is not UTF-8 text (byte {exc.start}): give a plain text file") from exc
    if not text.strip():
        raise InputError(f"--haystack {path} is empty: give a long plain text (RULER uses Paul Graham's essays)")
    return Essay(path.name, text.strip())
