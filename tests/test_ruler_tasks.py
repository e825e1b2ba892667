"""RULER's tasks on real prompts in SmolLM2's tokens: each answer re-derived from the prompt text, the sizes, scoring.

The expected strings of every task are found again in the built prompt itself, by reading it as a
model would (the needle lines, the variable chains, the word counts), without the generators. The
essay haystack is a text the test writes. The command: tests/test_ruler.py; served: test_served_ruler.py.
"""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from yarn_cli.errors import InputError
from yarn_cli.evals.ruler import (
    RulerSettings,
    SampleResult,
    TaskScore,
    effective_context,
    mean_over_tasks,
    postprocess,
    string_match_all,
    summarize,
)
from yarn_cli.evals.ruler_haystack import NOISE, Essay, split_sentences
from yarn_cli.evals.ruler_prompts import PromptBuilder, RulerPrompt
from yarn_cli.evals.ruler_tasks import TASKS, Task, parse_tasks
from yarn_cli.llama.evaluation import Vocabulary
from yarn_cli.model import open_model

LENGTHS = [1024, 2048]
INDICES = [0, 1]

# --- the essay haystack: plain sentences, with honorifics and initials the splitter must not cut at -----------

_WHO = ["Mr. Darcy", "Mrs. Bennet", "Dr. Hale", "the farmer", "the old miller", "Jane", "St. Clair", "J. Wilson"]
_DID = ["walked to", "looked at", "spoke of", "thought about", "waited by", "returned to", "painted"]
_WHERE = ["the river", "the mill", "the long road", "the church at Longbourn", "the garden", "the town", "3 boats"]
_WHEN = ["in the morning", "before supper", "with some reluctance", "for the third time", "as the rain began", ""]


def write_essay(sentences: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(sentences):
        who, did, where, when = rng.choice(_WHO), rng.choice(_DID), rng.choice(_WHERE), rng.choice(_WHEN)
        body = " ".join(w for w in (who, did, where, when) if w)
        body = body[0].upper() + body[1:]
        if rng.random() < 0.15:
            out.append(f'"{body}!" said {rng.choice(_WHO)}.')
        else:
            out.append(body + rng.choice([".", ".", ".", "?", "!"]))
    return " ".join(out)


ESSAY = Essay("essay.txt", write_essay(700))


@pytest.fixture(scope="module")
def vocab(smollm2: Path) -> Iterator[Vocabulary]:
    vocabulary = Vocabulary(open_model(smollm2))
    yield vocabulary
    vocabulary.close()


@pytest.fixture(scope="module")
def builder(vocab: Vocabulary) -> PromptBuilder:
    return PromptBuilder(vocab, 0, ESSAY, chat_template=False)


# --- reading a prompt as a model would -----------------------------------------------------------------------

NEEDLE = re.compile(r"One of the special magic (\w+) for (.+?) is: ([0-9a-f-]+)\.")
NIAH_PREFIX = re.compile(r" The special magic (numbers?|uuids?) for (.+) mentioned in the provided text (is|are)")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
WORD_KEY = re.compile(r"[A-Za-z' ñ-]+-[A-Za-z' ñ-]+")


def is_value(kind: str, text: str) -> bool:
    if kind == "numbers":
        return re.fullmatch(r"\d{7}", text) is not None
    if kind == "uuids":
        return UUID.fullmatch(text) is not None and str(uuid.UUID(text)) == text
    return WORD_KEY.fullmatch(text) is not None


def check_niah(task: Task, prompt: RulerPrompt) -> None:
    single = task.num_needle_q * task.num_needle_v == 1
    asked = NIAH_PREFIX.fullmatch(prompt.answer_prefix)
    assert asked, prompt.answer_prefix
    kind, query, verb = asked.groups()
    assert kind == (task.type_needle_v[:-1] if single else task.type_needle_v)
    assert verb == ("is" if single else "are")
    head, *_, question = prompt.input.split("\n")
    if single:
        assert head == (f"A special magic {kind} is hidden within the following text. Make sure to memorize it. "
                        f"I will quiz you about the {kind} afterwards.")  # fmt: skip
        assert question == f"What is the special magic {kind} for {query} mentioned in the provided text?"
    else:
        assert head == (f"Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
                        f"I will quiz you about the {kind} afterwards.")  # fmt: skip
        assert question == f"What are all the special magic {kind} for {query} mentioned in the provided text?"
    keys = re.split(r", (?:and )?", query)
    assert len(keys) == task.num_needle_q and len(set(keys)) == len(keys)

    context = prompt.input.split("\n", 1)[1].rsplit("\n", 1)[0]
    needles = NEEDLE.findall(context)
    values: dict[str, list[str]] = defaultdict(list)
    for needle_kind, key, value in needles:
        assert needle_kind == task.type_needle_v  # the needle says "numbers" even where the question is singular
        assert is_value(task.type_needle_k, key) and is_value(task.type_needle_v, value), (key, value)
        values[key].append(value)
    # the answers: each asked key's values, in the order the question asks them
    for i, key in enumerate(keys):
        expected = values[key]
        assert len(expected) == task.num_needle_v, (key, needles)
        assert sorted(prompt.outputs[i * task.num_needle_v : (i + 1) * task.num_needle_v]) == sorted(expected)
    assert len(prompt.outputs) == task.num_needle_q * task.num_needle_v
    hidden = max(task.num_needle_k, task.num_needle_q)
    if task.haystack == "needle":  # every line a needle, each with its own key
        lines = context.split("\n")
        assert len(lines) == len(needles) == prompt.haystack + hidden * task.num_needle_v
        assert len(values) == len(needles)
        return
    assert len(needles) == hidden * task.num_needle_v and len(values) == hidden  # distinct keys: multikey
    if task.haystack == "noise":
        lines = context.split("\n")
        assert [line for line in lines if not NEEDLE.fullmatch(line)] == [NOISE] * prompt.haystack
        return
    # the essay: its first words as they were, a needle only between sentences
    text = NEEDLE.sub("", context)
    assert " ".join(text.split()) == " ".join(ESSAY.words[: prompt.haystack])
    for match in NEEDLE.finditer(context):
        before = context[: match.start()].rstrip()
        if not NEEDLE.sub("", context[match.end() :]).strip():
            continue  # at depth 100: after the text, whose last sentence the word count may have cut
        assert before == "" or before.endswith((".", "!", "?", '."', '!"', '?"')), before[-40:]
        assert not before.endswith(("Mr.", "Mrs.", "Dr.", "St.", " J.")), before[-40:]


VAR = re.compile(r"VAR ([A-Z]+) = (?:(\d+)|VAR ([A-Z]+))")


def chain_from(text: str, value: str) -> set[str]:
    """The variables that hold ``value`` by following the assignments in ``text``."""
    holding: set[str] = set()
    links = [(name, number, source) for name, number, source in VAR.findall(text)]
    for name, number, _ in links:
        if number == value:
            holding.add(name)
    grown = True
    while grown:
        grown = False
        for name, _, source in links:
            if source in holding and name not in holding:
                holding.add(name)
                grown = True
    return holding


VT_HEAD = "Memorize and track the chain(s) of variable assignment hidden in the following text."


def check_vt(task: Task, prompt: RulerPrompt) -> None:
    example, part = prompt.input.rsplit(VT_HEAD, 1)
    assert example.startswith(VT_HEAD)  # the answered in-context example comes first
    asked = re.search(r"\nQuestion: Find all variables that are assigned the value (\d+) in the text above\.$", part)
    assert asked, part[-200:]
    value = asked.group(1)
    assert prompt.answer_prefix == (
        " Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned "
        f"the value {value}, they are: "
    )
    holding = chain_from(part, value)
    assert holding == set(prompt.outputs) and len(prompt.outputs) == task.num_hops + 1
    assert all(len(name) == 5 for name in holding)
    noise = [line for line in part.split("\n") if line.startswith("The grass")]
    assert len(noise) == prompt.haystack
    # the example's own answer is its own chain (re-lettered for this sample, its value too)
    example_value = re.search(r"assigned the value (\d+) in the text above", example)
    assert example_value and example_value.group(1) != "12345"
    answer = example.rsplit("they are:", 1)[1].split()
    assert len(answer) == task.num_hops + 1 and all(len(name) == 3 for name in answer)
    assert chain_from(example, example_value.group(1)) == set(answer)


def numbered(text: str) -> list[str]:
    """``1. a 2. b ...`` as its words, the numbers checked to count from 1 (a word may hold a space)."""
    parts = re.split(r"(?:^| )(\d+)\. ", text)
    assert parts[0] == ""
    numbers, words = parts[1::2], parts[2::2]
    assert numbers == [str(i + 1) for i in range(len(words))]
    return words


def top(words: list[str], n: int) -> list[str]:
    """The ``n`` most frequent words, checked to stand apart from the rest."""
    counts = Counter(words).most_common()
    assert len(counts) > n and counts[n - 1][1] > counts[n][1], counts[: n + 1]
    return [w for w, _ in counts[:n]]


CWE_HEAD = "Below is a numbered list of words."


def check_cwe(task: Task, prompt: RulerPrompt) -> None:
    example, part = prompt.input.rsplit(CWE_HEAD, 1)
    assert prompt.answer_prefix == " Answer: The top 10 words that appear most often in the list are:"
    listed = re.fullmatch(r" In these words, some appear more often than others\. Memorize the ones that appear most "
                          r"often\.\n(.*)\nQuestion: What are the 10 most common words in the above list\?", part,
                          re.DOTALL)  # fmt: skip
    assert listed, part[-300:]
    words = numbered(listed.group(1))
    assert len(set(words)) == prompt.haystack
    assert sorted(top(words, 10)) == sorted(prompt.outputs)
    # the answered example before it: its answer is its own top 10
    shot = re.fullmatch(r"Below is .*? most often\.\n(.*)\nQuestion: .*\? Answer: The top 10 words that appear most "
                        r"often in the list are: (.*)\n", example, re.DOTALL)  # fmt: skip
    assert shot, example[:300]
    assert sorted(top(numbered(shot.group(1)), 10)) == sorted(numbered(shot.group(2)))


FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"


def check_fwe(task: Task, prompt: RulerPrompt) -> None:
    assert prompt.answer_prefix == FWE_PREFIX
    coded = re.fullmatch(r"Read the following coded text .*? Find the three most frequently appeared coded words\. "
                         r"(.*)\nQuestion: Do not provide any explanation\. Please ignore the dots '\.\.\.\.'\. "
                         r"What are the three most frequently appeared words in the above coded text\?", prompt.input,
                         re.DOTALL)  # fmt: skip
    assert coded
    words = coded.group(1).split(" ")
    assert len(words) <= prompt.haystack  # Zipf's counts rounded down
    assert all(w == "..." or re.fullmatch(r"[a-z]{6}", w) for w in words)
    ranked = top(words, 4)
    assert ranked[0] == "..."  # the most frequent is noise
    assert ranked[1:] == prompt.outputs


CHECKS = {"niah": check_niah, "variable_tracking": check_vt, "common_words_extraction": check_cwe,
          "freq_words_extraction": check_fwe}  # fmt: skip


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", list(TASKS))
def test_the_answers_are_in_the_prompt(builder: PromptBuilder, vocab: Vocabulary, name: str, length: int) -> None:
    task = TASKS[name]
    for index in INDICES:
        prompt = builder.build(name, length, index)
        assert (prompt.task, prompt.length, prompt.index) == (name, length, index)
        CHECKS[task.kind](task, prompt)
        # sized in the model's tokens: the prompt and its answer fit the length, and fill most of it
        assert prompt.text == prompt.input + prompt.answer_prefix  # no chat template
        assert prompt.tokens == vocab.tokenize(prompt.text, add_bos=True)
        assert prompt.max_tokens == task.tokens_to_generate
        assert 0.85 * length <= len(prompt.tokens) + task.tokens_to_generate <= length
        assert prompt.to_jsonl() == {
            "index": index, "input": prompt.input, "outputs": prompt.outputs,
            "length": len(prompt.tokens) + task.tokens_to_generate, "answer_prefix": prompt.answer_prefix,
            "task": name,
        }  # fmt: skip


def test_answer_prefixes_are_rulers(builder: PromptBuilder) -> None:
    def prefix(name: str) -> str:
        return builder.build(name, 1024, 0).answer_prefix

    key = re.compile(r"[^,]+")
    for name in ("niah_single_1", "niah_single_2", "niah_multikey_1", "niah_multikey_2"):
        head, query = prefix(name).rsplit(" for ", 1)
        assert head == " The special magic number" and query.endswith(" mentioned in the provided text is")
        assert key.fullmatch(query.removesuffix(" mentioned in the provided text is"))
    for name in ("niah_single_3", "niah_multikey_3"):
        assert prefix(name).startswith(" The special magic uuid for ") and prefix(name).endswith(" text is")
    assert prefix("niah_multivalue").startswith(" The special magic numbers for ")
    assert prefix("niah_multivalue").endswith(" mentioned in the provided text are")
    assert prefix("niah_multiquery").count(", ") == 3 and ", and " in prefix("niah_multiquery")
    assert prefix("cwe") == " Answer: The top 10 words that appear most often in the list are:"
    assert prefix("fwe") == FWE_PREFIX
    assert prefix("vt").startswith(" Answer: According to the chain(s) of variable assignment in the text above, 5 ")


def test_samples_are_seeded(vocab: Vocabulary) -> None:
    first = PromptBuilder(vocab, 0, ESSAY, chat_template=False)
    again = PromptBuilder(vocab, 0, ESSAY, chat_template=False)
    other = PromptBuilder(vocab, 1, ESSAY, chat_template=False)
    for name in TASKS:
        a = first.build(name, 1024, 0)
        assert first.build(name, 1024, 1) != a
        assert again.build(name, 1024, 1) == first.build(name, 1024, 1)  # whatever was built before it
        assert again.build(name, 1024, 0) == a
        b = other.build(name, 1024, 0)
        assert b.input != a.input and b.outputs != a.outputs, name


def test_a_chat_template_wraps_the_input_and_opens_the_answer(vocab: Vocabulary) -> None:
    plain = PromptBuilder(vocab, 0, ESSAY, chat_template=False)
    chat = PromptBuilder(vocab, 0, ESSAY, chat_template=True)
    for name in ("niah_single_1", "niah_multivalue", "fwe"):
        prompt = chat.build(name, 1024, 0)
        assert prompt.text.startswith("<|im_start|>")
        assert prompt.text.endswith(f"<|im_start|>assistant\n{prompt.answer_prefix}")
        assert f"<|im_start|>user\n{prompt.input}<|im_end|>" in prompt.text
        assert prompt.outputs == plain.build(name, 1024, 0).outputs  # the same sample, sized with the template
        # the template's markers are one token each: fewer tokens than the same text read as plain text
        assert len(prompt.tokens) < len(vocab.tokenize(prompt.text, add_bos=True))
        assert 0.85 * 1024 <= prompt.sized <= 1024


def test_the_sentence_splitter() -> None:
    text = 'Mr. Darcy came in. He sat down! Did Dr. Hale see J. Wilson? "Go!" She ran. St. Clair waited. 3 boats.'
    assert split_sentences(text) == [
        "Mr. Darcy came in.", "He sat down!", "Did Dr. Hale see J. Wilson?", '"Go!"', "She ran.", "St. Clair waited.",
        "3 boats.",
    ]  # fmt: skip
    assert split_sentences("e.g. this and i.e. that, etc. and so on.") == ["e.g. this and i.e. that, etc. and so on."]
    assert split_sentences("no end") == ["no end"]
    sentences = split_sentences(ESSAY.text)
    assert " ".join(sentences) == ESSAY.text
    assert len(sentences) > 600
    assert not any(s.endswith(("Mr.", "Mrs.", "Dr.", "St.", " J.")) for s in sentences)


def test_too_short_a_length_or_haystack_is_refused(vocab: Vocabulary) -> None:
    builder = PromptBuilder(vocab, 0, Essay("short.txt", write_essay(20)), chat_template=False)
    with pytest.raises(InputError, match=r"a length of 200 tokens is too short for niah_single_1: .* take \d+"):
        builder.build("niah_single_1", 200, 0)
    with pytest.raises(InputError, match=r"--haystack short.txt is too short for niah_single_2 at 1,024 tokens"):
        builder.build("niah_single_2", 1024, 0)
    tiny = PromptBuilder(vocab, 0, Essay("two.txt", "Two words."), chat_template=False)
    with pytest.raises(InputError, match=r"--haystack two.txt is too short for niah_multikey_1: it has 2 words"):
        tiny.build("niah_multikey_1", 1024, 0)  # fewer words than it has needles


# --- scoring ------------------------------------------------------------------------------------------------


def test_string_match_all() -> None:
    assert string_match_all(" 1234567.", ["1234567"]) == 1.0
    assert string_match_all("nothing here", ["1234567"]) == 0.0
    assert string_match_all("", ["1234567"]) == 0.0
    assert string_match_all("The Answer: FOO-BAR", ["foo-bar"]) == 1.0  # case-insensitive both ways
    assert string_match_all("xqzab", ["XQZAB"]) == 1.0
    assert string_match_all("111 and 333, then", ["111", "222", "333", "444"]) == 0.5  # partial credit
    assert string_match_all("111 333 444", ["111", "222", "333", "444"]) == 0.75
    # control characters become line breaks: they separate, never join
    assert postprocess("  12\x0034\t\n ") == "12\n34"
    assert string_match_all("12\x0034567", ["1234567"]) == 0.0
    assert string_match_all("\x1b[0m 1234567 \x07", ["1234567"]) == 1.0
    assert string_match_all("AB\x1fCD", ["ab", "cd", "abcd"]) == pytest.approx(2 / 3)


def result(task: str, length: int, score: float, variant: str = "as-is", *, truncated: bool = False, index: int = 0):
    return SampleResult(task, length, index, variant, 900, ["x"], "x", score, 0.1, 900, truncated=truncated)


def test_summarize_rounds_as_ruler_does() -> None:
    rows = summarize([
        result("fwe", 1024, 1.0), result("fwe", 1024, 1.0, index=1), result("fwe", 1024, 0.0, index=2),
        result("niah_single_1", 2048, 0.5), result("niah_single_1", 1024, 1 / 3),
        result("vt", 1024, 1.0, truncated=True), result("vt", 1024, 0.0, index=1),
        result("cwe", 1024, 0.0, truncated=True), result("niah_single_1", 1024, 1.0, variant="yarn:2"),
    ])  # fmt: skip
    assert [vars(r) for r in rows] == [
        {"variant": "as-is", "task": "niah_single_1", "length": 1024, "score": 33.33, "samples": 1, "truncated": 0},
        {"variant": "as-is", "task": "niah_single_1", "length": 2048, "score": 50.0, "samples": 1, "truncated": 0},
        {"variant": "as-is", "task": "vt", "length": 1024, "score": 0.0, "samples": 1, "truncated": 1},
        {"variant": "as-is", "task": "cwe", "length": 1024, "score": None, "samples": 0, "truncated": 1},
        {"variant": "as-is", "task": "fwe", "length": 1024, "score": 66.67, "samples": 3, "truncated": 0},
        {"variant": "yarn:2", "task": "niah_single_1", "length": 1024, "score": 100.0, "samples": 1, "truncated": 0},
    ]  # the variants, then RULER's task order, then the lengths
    assert mean_over_tasks(rows, "as-is", 1024) == round((33.33 + 0.0 + 66.67) / 3, 2)  # cwe has no score
    assert mean_over_tasks(rows, "as-is", 2048) == 50.0
    assert mean_over_tasks(rows, "yarn:2", 2048) is None


def rows_of(means: dict[int, float | None], variant: str = "as-is") -> list[TaskScore]:
    """Two tasks per length whose mean is ``means[length]`` (None: every sample of it truncated)."""
    rows = []
    for length, mean in means.items():
        if mean is None:
            rows.append(TaskScore(variant, "fwe", length, None, 0, 1))
        else:
            rows.append(TaskScore(variant, "fwe", length, mean + 1, 1))
            rows.append(TaskScore(variant, "vt", length, mean - 1, 1))
    return rows


def test_effective_context() -> None:
    lengths = [1024, 2048, 4096, 8192]
    # stops at the first length below the threshold, even though a longer one passes again
    rows = rows_of({1024: 100.0, 2048: 90.0, 4096: 80.0, 8192: 95.0})
    assert mean_over_tasks(rows, "as-is", 8192) == 95.0
    assert effective_context(rows, "as-is", lengths, 85.6) == 2048
    assert effective_context(rows, "as-is", [8192, 1024, 4096, 2048], 85.6) == 2048  # in length order
    assert effective_context(rows, "as-is", lengths, 90.0) == 2048  # reaching the threshold is enough
    assert effective_context(rows, "as-is", lengths, 79.0) == 8192
    assert effective_context(rows, "as-is", lengths, 100.0) == 1024
    assert effective_context(rows_of({1024: 50.0, 2048: 99.0}), "as-is", [1024, 2048], 85.6) is None
    # a length without a score (every sample truncated) stops it too
    assert effective_context(rows_of({1024: 99.0, 2048: None, 4096: 99.0}), "as-is", [1024, 2048, 4096], 85.6) == 1024
    assert effective_context(rows_of({1024: 99.0}), "as-is", [1024, 2048], 85.6) == 1024  # 2048 not run
    assert effective_context(rows, "yarn:2", lengths, 85.6) is None  # another variant's rows


def test_settings_are_checked() -> None:
    with pytest.raises(InputError, match="--samples must be at least 1, got 0"):
        RulerSettings([1024], ["fwe"], samples=0)
    for bad in (200.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="--threshold is a score in percent, from 0 to 100"):
            RulerSettings([1024], ["fwe"], threshold=bad)
    assert RulerSettings([1024], ["fwe"], seed=3).identity() == {"seed": 3, "chat_template": False, "haystack": None}


def test_parse_tasks() -> None:
    assert parse_tasks("all") == list(TASKS) and len(TASKS) == 11
    assert parse_tasks("niah") == [
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
        "niah_multivalue", "niah_multiquery",
    ]  # fmt: skip
    assert parse_tasks("fwe, vt,niah_single_1") == ["niah_single_1", "vt", "fwe"]  # RULER's order
    assert parse_tasks("vt,vt,niah,fwe,") == [*parse_tasks("niah"), "vt", "fwe"]  # no repeats
    assert parse_tasks("cwe,all") == list(TASKS)
    with pytest.raises(InputError, match=r"unknown task 'niah_single_9' in --tasks: use all, niah, or niah_single_1"):
        parse_tasks("vt,niah_single_9")
    for qa in ("qa_1", "qa_2"):
        with pytest.raises(InputError, match=rf"--tasks {qa}: qa_1 and qa_2 need SQuAD and HotpotQA, which cannot be "
                                             "had offline; choose among niah_single_1"):  # fmt: skip
            parse_tasks(f"niah,{qa}")
    with pytest.raises(InputError, match="--tasks is empty"):
        parse_tasks(" , ")
