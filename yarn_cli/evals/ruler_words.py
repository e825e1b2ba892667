"""The English words RULER draws keys and common words from: wonderwords' noun, adjective and verb lists.

RULER reads the same three files of the wonderwords package (``nounlist.txt``, ``adjectivelist.txt``,
``verblist.txt``). Its word keys are ``adjective-noun`` pairs, drawn uniformly from the sorted set of
all pairs; here an adjective and a noun are drawn each, which is the same distribution without
building the 6 million pairs. Its common words (cwe) are the three lists' sorted union.
"""

from __future__ import annotations

import random
from functools import cache
from importlib import resources


@cache
def word_list(name: str) -> tuple[str, ...]:
    """One of wonderwords' lists (``nounlist.txt``...), as RULER reads it: a word per line, right-stripped."""
    text = resources.files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8")
    return tuple(line.rstrip() for line in text.splitlines())


@cache
def key_parts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The adjectives and nouns of word keys, each sorted and without repeats."""
    return tuple(sorted(set(word_list("adjectivelist.txt")))), tuple(sorted(set(word_list("nounlist.txt"))))


def random_key_word(rng: random.Random) -> str:
    adjectives, nouns = key_parts()
    return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"


@cache
def common_words() -> tuple[str, ...]:
    """cwe's vocabulary: nouns, adjectives and verbs, sorted without repeats (shuffled per seed by the task)."""
    return tuple(sorted(set(word_list("nounlist.txt") + word_list("adjectivelist.txt") + word_list("verblist.txt"))))
