"""RULER's synthetic tasks, as NVIDIA/RULER builds them (``scripts/data/synthetic/``), word for word.

Each task is one of RULER's four generators (``niah``, ``variable_tracking``,
``common_words_extraction``, ``freq_words_extraction``) with the arguments of RULER's
``synthetic.yaml``; templates and answer prefixes are RULER's ``constants.py``. A generator turns a
sample's seed and a haystack size into the prompt text (template and answer prefix included, as
RULER formats them) and the expected strings; ``ruler_prompts`` sizes it in the model's tokens.

Where this differs from RULER, deliberately: every draw of a sample comes from its own seeded
generator (so a sample is the same under every variant and whatever its size was searched at),
a word key is an adjective and a noun drawn apart (``ruler_words``), sentences are split without
nltk (``ruler_haystack``), and fwe's zeta(2) is pi^2/6 rather than scipy's. QA (SQuAD, HotpotQA)
needs data sets that cannot be had offline and is left out.
"""

from __future__ import annotations

import math
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yarn_cli.errors import InputError
from yarn_cli.evals.ruler_haystack import NOISE, Essay, split_sentences
from yarn_cli.evals.ruler_words import common_words, random_key_word

# scripts/data/synthetic/constants.py
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assigned the value {query}, they are: "
)
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
)
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
VT_ICL_TOKENS = 500  # RULER's in-context example for vt is sized to 500 tokens, then re-lettered per sample
ZETA_2 = math.pi**2 / 6  # fwe's alpha is 2.0: scipy.special.zeta(2.0)


@dataclass(frozen=True)
class Task:
    """One of RULER's tasks: its generator and that generator's arguments (``synthetic.yaml``)."""

    name: str
    kind: str  # niah, variable_tracking, common_words_extraction, freq_words_extraction
    tokens_to_generate: int
    haystack: str | None = None  # niah and vt: noise, essay or needle
    type_needle_k: str = "words"
    type_needle_v: str = "numbers"
    num_needle_k: int = 1
    num_needle_v: int = 1
    num_needle_q: int = 1
    num_chains: int = 1
    num_hops: int = 4
    freq_cw: int = 30
    freq_ucw: int = 3
    num_cw: int = 10

    @property
    def answer_prefix_head(self) -> str:
        """The first 10 characters of the answer prefix, by which RULER finds where the input ends."""
        return {"niah": NIAH_PREFIX, "variable_tracking": VT_PREFIX, "common_words_extraction": CWE_PREFIX,
                "freq_words_extraction": FWE_PREFIX}[self.kind][:10]  # fmt: skip

    @property
    def unit(self) -> str:
        """What the haystack size counts."""
        if self.kind == "common_words_extraction":
            return "distinct words"
        if self.kind == "freq_words_extraction":
            return "coded words"
        return "words" if self.haystack == "essay" else "sentences"

    @property
    def smallest(self) -> int:
        """The least haystack a prompt is built with (RULER's lower bounds; fwe: its three answers present)."""
        if self.kind == "common_words_extraction":
            return self.num_cw
        if self.kind == "freq_words_extraction":
            return 30
        return max(self.num_needle_k * self.num_needle_v, self.num_chains * (self.num_hops + 1))


def _niah(name: str, haystack: str, **args: object) -> Task:
    return Task(name, "niah", 128, haystack, **args)  # type: ignore[arg-type]


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _niah("niah_single_1", "noise"),
        _niah("niah_single_2", "essay"),
        _niah("niah_single_3", "essay", type_needle_v="uuids"),
        _niah("niah_multikey_1", "essay", num_needle_k=4),
        _niah("niah_multikey_2", "needle"),
        _niah("niah_multikey_3", "needle", type_needle_k="uuids", type_needle_v="uuids"),
        _niah("niah_multivalue", "essay", num_needle_v=4),
        _niah("niah_multiquery", "essay", num_needle_q=4),
        Task("vt", "variable_tracking", 30, "noise"),
        Task("cwe", "common_words_extraction", 120),
        Task("fwe", "freq_words_extraction", 50),
    ]
}
GROUPS = {"all": list(TASKS), "niah": [n for n in TASKS if n.startswith("niah")]}
LEFT_OUT = "qa_1 and qa_2 need SQuAD and HotpotQA, which cannot be had offline"


def parse_tasks(text: str) -> list[str]:
    """``all``, ``niah``, or task names, comma-separated; in RULER's order, without repeats."""
    wanted: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in GROUPS:
            wanted.update(GROUPS[part])
        elif part in TASKS:
            wanted.add(part)
        elif part in ("qa_1", "qa_2"):
            raise InputError(f"--tasks {part}: {LEFT_OUT}; choose among {', '.join(TASKS)}")
        else:
            raise InputError(f"unknown task {part!r} in --tasks: use all, niah, or {', '.join(TASKS)}")
    if not wanted:
        raise InputError("--tasks is empty: give all, niah, or task names such as niah_single_1,vt")
    return [n for n in TASKS if n in wanted]


@dataclass(frozen=True)
class Draw:
    """What a sample's generator is given besides its size: its seed, the length, the haystack."""

    seed: str  # the sample's own: every draw comes from random.Random(seed)
    run_seed: int  # RULER's fixed-seed shuffles (random.Random(args.random_seed))
    length: int
    essay: Essay | None
    vt_example: str | None = None  # vt's in-context example, built once per run


Generator = Callable[[Task, Draw, int], tuple[str, list[str]]]


def _random_value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))  # 7 digits
    if kind == "words":
        return random_key_word(rng)
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(kind)


def _insert_in_sentences(sentences: list[str], pieces: list[str], rng: random.Random) -> str:
    """RULER's essay insertion: pieces at depths drawn from DEPTHS, between sentences."""
    positions = [0, *sorted(int(len(sentences) * (d / 100)) for d in rng.sample(DEPTHS, len(pieces)))]
    positions.append(len(sentences))
    parts = []
    for i in range(1, len(positions)):
        parts.append(" ".join(sentences[positions[i - 1] : positions[i]]))
        if i - 1 < len(pieces):
            parts.append(pieces[i - 1])
    return " ".join(parts)


def niah(task: Task, draw: Draw, size: int) -> tuple[str, list[str]]:
    """``niah.py``'s ``generate_input_output``."""
    rng = random.Random(draw.seed)
    num_k = max(task.num_needle_k, task.num_needle_q)
    keys: list[str] = []
    values: list[list[str]] = []
    needles: list[str] = []
    for _ in range(num_k):
        keys.append(_random_value(task.type_needle_k, rng))
        value = []
        for _ in range(task.num_needle_v):
            value.append(_random_value(task.type_needle_v, rng))
            needles.append(NEEDLE.format(type_needle_v=task.type_needle_v, key=keys[-1], value=value[-1]))
        values.append(value)
    random.Random(draw.run_seed).shuffle(needles)
    if task.haystack == "essay":
        assert draw.essay is not None
        text = " ".join(draw.essay.words[:size])
        context = _insert_in_sentences(split_sentences(text.strip()), needles, rng)
    else:
        if task.haystack == "noise":
            sentences = [NOISE] * size
        else:
            sentences = [
                NEEDLE.format(
                    type_needle_v=task.type_needle_v,
                    key=_random_value(task.type_needle_k, rng),
                    value=_random_value(task.type_needle_v, rng),
                )
                for _ in range(size)
            ]
        indexes = sorted(rng.sample(range(size), len(needles)), reverse=True)
        for index, element in zip(indexes, needles, strict=True):
            sentences.insert(index, element)
        context = "\n".join(sentences)
    indices = rng.sample(range(num_k), task.num_needle_q)
    queries = [keys[i] for i in indices]
    answers = [a for i in indices for a in values[i]]
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template = NIAH_TEMPLATE + NIAH_PREFIX
    type_needle_v = task.type_needle_v
    if task.num_needle_q * task.num_needle_v == 1:
        template = template.replace("Some", "A").replace("are all", "is").replace("are", "is")
        template = template.replace("answers", "answer")
        type_needle_v = type_needle_v[:-1]  # remove "s"
    return template.format(type_needle_v=type_needle_v, context=context, query=query), answers


def _chains(task: Task, rng: random.Random, *, icl: bool) -> tuple[list[list[str]], list[list[str]]]:
    """``variable_tracking.py``'s ``generate_chains``."""
    k = 3 if icl else 5
    hops = min(10, task.num_hops) if icl else task.num_hops
    names = ["".join(rng.choices(string.ascii_uppercase, k=k)) for _ in range((hops + 1) * task.num_chains)]
    while len(set(names)) < task.num_chains * (hops + 1):
        names.append("".join(rng.choices(string.ascii_uppercase, k=k)))
    variables, chains = [], []
    for i in range(0, len(names), hops + 1):
        these = names[i : i + hops + 1]
        variables.append(these)
        chain = [f"VAR {these[0]} = {12345 if icl else rng.randint(10000, 99998)}"]
        chain.extend(f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(hops))
        chains.append(chain)
    return variables, chains


def variable_tracking_text(task: Task, rng: random.Random, size: int, *, icl: bool) -> tuple[str, list[str]]:
    """``variable_tracking.py``'s ``generate_input_output`` on the noise haystack."""
    variables, chains = _chains(task, rng, icl=icl)
    value = chains[0][0].split("=")[-1].strip()
    sentences = [NOISE] * size
    for chain in chains:
        positions = sorted(rng.sample(range(len(sentences)), len(chain)))
        for j, at in enumerate(positions):
            sentences.insert(at + j, chain[j])
    context = "\n".join(sentences).replace(". \n", ".\n")
    text = (VT_TEMPLATE + VT_PREFIX).format(context=context, query=value, num_v=task.num_hops + 1)
    return text, variables[0]


def vt_example_text(task: Task, draw: Draw, size: int) -> tuple[str, list[str]]:
    """The in-context example before it is answered: 3-letter names, the value 12345 (``is_icl``)."""
    return variable_tracking_text(task, random.Random(f"{draw.seed}:example"), size, icl=True)


def variable_tracking(task: Task, draw: Draw, size: int) -> tuple[str, list[str]]:
    """A vt sample: the answered example, re-lettered for this sample, before the task (``randomize_icl``)."""
    rng = random.Random(draw.seed)
    text, answer = variable_tracking_text(task, rng, size, icl=False)
    assert draw.vt_example is not None
    example = draw.vt_example
    for name in example.strip().split()[-task.num_hops - 1 :]:
        example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
    example = example.replace("12345", str(rng.randint(10000, 99998)))
    return example + "\n" + text, answer


def _cwe_example(
    words: list[str], num_words: int, common: int, uncommon: int, draw: Draw, rng: random.Random, num_cw: int
) -> tuple[str, list[str]]:
    """``common_words_extraction.py``'s ``get_example``."""
    chosen = rng.sample(words, num_words)
    common_words_, rare = chosen[:num_cw], chosen[num_cw:]
    word_list = common_words_ * common + rare * uncommon
    random.Random(draw.run_seed).shuffle(word_list)
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(word_list)), common_words_


def common_words_extraction(task: Task, draw: Draw, size: int) -> tuple[str, list[str]]:
    """``common_words_extraction.py``'s ``generate_input_output``: one answered example, then the list."""
    words = list(common_words())
    random.Random(draw.run_seed).shuffle(words)
    if size > len(words):
        raise InputError(
            f"cwe at {draw.length:,} tokens needs more than the {len(words):,} distinct words of wonderwords' lists "
            "(RULER adds a word list of its own there): test cwe at shorter lengths"
        )
    rng = random.Random(draw.seed)
    short = draw.length < 4096
    example, example_answer = _cwe_example(words, 20 if short else 40, 3 if short else 10, 1 if short else 3,
                                           draw, rng, task.num_cw)  # fmt: skip
    context, answer = _cwe_example(words, size, 6 if short else task.freq_cw, 1 if short else task.freq_ucw,
                                   draw, rng, task.num_cw)  # fmt: skip
    template = CWE_TEMPLATE + CWE_PREFIX
    shot = template.format(num_cw=task.num_cw, context=example, query="") + " "
    shot += " ".join(f"{i + 1}. {word}" for i, word in enumerate(example_answer))
    return shot + "\n" + template.format(num_cw=task.num_cw, context=context, query=""), answer


def freq_words_extraction(task: Task, draw: Draw, size: int) -> tuple[str, list[str]]:
    """``freq_words_extraction.py``'s ``generate_input_output``: Zipf-distributed coded words, the top one noise."""
    rng = random.Random(draw.seed)
    vocab_size = (draw.length - task.tokens_to_generate) // 50
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(vocab_size)]
    while len(set(vocab)) < vocab_size:
        vocab.append("".join(rng.choices(string.ascii_lowercase, k=6)))
    vocab = sorted(set(vocab))
    random.Random(draw.run_seed).shuffle(vocab)
    vocab[0] = "..."  # the top ranked is noise
    counts = (size * (np.arange(1, len(vocab) + 1, dtype=np.float64) ** -2.0) / ZETA_2).astype(int)
    sampled = [word for word, count in zip(vocab, counts, strict=True) for _ in range(int(count))]
    random.Random(draw.run_seed).shuffle(sampled)
    return (FWE_TEMPLATE + FWE_PREFIX).format(context=" ".join(sampled), query=""), vocab[1:4]


GENERATORS: dict[str, Generator] = {
    "niah": niah,
    "variable_tracking": variable_tracking,
    "common_words_extraction": common_words_extraction,
    "freq_words_extraction": freq_words_extraction,
}


def split_answer_prefix(task: Task, text: str) -> tuple[str, str]:
    """RULER's split of a formatted prompt into input and answer prefix: at the prefix's first 10 characters."""
    at = text.rfind(task.answer_prefix_head)
    return text[:at], text[at:]
