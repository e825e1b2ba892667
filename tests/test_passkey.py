"""Passkey retrieval: prompt sizes in the model's tokens, scoring, reuse, the JSON record, the real model.

Resuming a run from its record: tests/test_passkey_resume.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import pytest
from ggufs import write_tiny_llama
from helpers import error_line, sweep

from yarn_cli.errors import InputError
from yarn_cli.evals.lengths import default_lengths, parse_length
from yarn_cli.evals.passkey import (
    GARBAGE,
    QUESTION,
    TASK,
    PasskeySettings,
    PromptBuilder,
    TrialSpec,
    info_line,
    parse_answer,
    parse_depths,
    plan_trials,
)
from yarn_cli.evals.passkey_run import run_passkey
from yarn_cli.llama.evaluation import Vocabulary, greedy_completion
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants


@pytest.fixture(scope="module")
def smol_tokenize(smollm2: Path):
    vocab = llama_cpp.Llama(model_path=str(smollm2), vocab_only=True, verbose=False)
    yield lambda text: vocab.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    vocab.close()


# --- the prompt ------------------------------------------------------------------------------


def test_prompt_is_the_papers(smol_tokenize) -> None:
    prompt = PromptBuilder(smol_tokenize).build(TrialSpec(length=600, index=0, key=4242, depth=0.5))
    lines = prompt.text.split("\n")
    assert lines[0] == TASK and lines[2] == info_line(4242) and lines[4] == QUESTION
    assert lines[2] == "The pass key is 4242. Remember it. 4242 is the pass key."
    assert lines[1].startswith(GARBAGE[:40]) and lines[3].startswith(GARBAGE[:40])


@pytest.mark.parametrize("length", [200, 333, 512, 1000, 1024, 1500, 2048, 3000, 4096, 8192])
@pytest.mark.parametrize("depth", [0.0, 0.37, 1.0])
def test_prompt_lands_at_or_just_below_its_target(smol_tokenize, length: int, depth: float) -> None:
    prompt = PromptBuilder(smol_tokenize).build(TrialSpec(length=length, index=0, key=31337, depth=depth))
    assert len(prompt.tokens) == len(smol_tokenize(prompt.text))
    assert length * 0.99 <= len(prompt.tokens) <= length


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_key_sits_at_the_asked_depth(smol_tokenize, depth: float) -> None:
    builder = PromptBuilder(smol_tokenize)
    prompt = builder.build(TrialSpec(length=2048, index=0, key=12345, depth=depth))
    lines = prompt.text.split("\n")
    filler = len(lines[1]) + len(lines[3])
    assert len(lines[1]) / filler == pytest.approx(depth, abs=0.001)
    before_key = len(smol_tokenize("\n".join(lines[:2])))
    fixed = builder.fixed_tokens
    assert (before_key - len(smol_tokenize(TASK))) / (len(prompt.tokens) - fixed) == pytest.approx(depth, abs=0.02)


def test_too_short_a_length_is_refused(smol_tokenize) -> None:
    builder = PromptBuilder(smol_tokenize)
    with pytest.raises(InputError, match=r"too short: the task, key and question alone take \d+ tokens"):
        builder.build(TrialSpec(length=40, index=0, key=1, depth=0.5))


# --- parsing and planning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "answer"),
    [
        (" 44888. Remember it.", 44888),
        ("no digits at all", None),
        ("", None),
        (" 00123 is it", 123),
        (" 12 or 345", 12),
        (" -5", 5),
        (" 12,345", 12),
        ("key42key", 42),
    ],
)
def test_answer_parser(output: str, answer: int | None) -> None:
    assert parse_answer(output) == answer


def test_lengths_and_depths_parse() -> None:
    assert [parse_length(x) for x in ("1k", "32k", "8192", " 2K ", "1.5k")] == [1024, 32768, 8192, 2048, 1536]
    for bad in ("abc", "0", "-1k", "1.3", "k", "inf"):
        with pytest.raises(InputError, match="cannot read"):
            parse_length(bad)
    assert default_lengths(8192) == [1024, 2048, 4096, 8192]
    assert parse_depths(None) is None and parse_depths("random") is None
    assert parse_depths("grid:5") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_depths("0,0.5,1") == [0.0, 0.5, 1.0]
    for bad in ("grid:0", "1.5", "a,b", "grid:x"):
        with pytest.raises(InputError, match="--depths"):
            parse_depths(bad)


def test_trials_are_seeded_and_independent_of_other_lengths() -> None:
    a = plan_trials([1024, 2048], 5, None, seed=7)
    b = plan_trials([2048], 5, None, seed=7)
    assert [t for t in a if t.length == 2048] == b
    assert plan_trials([1024], 5, None, seed=8) != plan_trials([1024], 5, None, seed=7)
    assert all(1 <= t.key <= 50000 and 0 <= t.depth <= 1 for t in a)
    fixed = plan_trials([1024], 4, [0.0, 1.0], seed=1)
    assert [t.depth for t in fixed] == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(InputError, match="--trials must be at least 1"):
        plan_trials([1024], 0, None, seed=1)


# --- runs in llama.cpp ---------------------------------------------------------------------------


def test_reuse_gives_the_same_answers_with_fewer_evaluated_tokens(tiny_model: Path) -> None:
    settings = PasskeySettings(lengths=[600, 900], trials=4, seed=3)
    model = open_model(tiny_model)
    variants = parse_variants("as-is,yarn:2", model.rope)
    with LlamaBackend(model, variants) as backend:
        reused = run_passkey(backend, settings).results
    with LlamaBackend(model, variants, reuse=False) as backend:
        fresh = run_passkey(backend, settings).results

    def by_trial(results):
        return {(r.variant, r.length, r.index): (r.output, r.answer, r.prompt_tokens) for r in results}

    assert by_trial(reused) == by_trial(fresh)
    assert len(reused) == 16
    assert sum(r.evaluated_tokens for r in reused) < sum(r.evaluated_tokens for r in fresh)


def test_reading_a_prompt_ahead_in_its_own_batches_changes_nothing(tiny_model: Path) -> None:
    """Progress inside a trial evaluates the prompt's batches first; the answers and the counts stay the same."""
    model = open_model(tiny_model)
    builder = PromptBuilder(lambda text: Vocabulary(model).tokenize(text, add_bos=True))
    prompts = [builder.build(spec).tokens for spec in plan_trials([700, 900], 2, None, seed=5)]
    prompts.append(prompts[-1])  # the same prompt again: all of it kept
    runs = {}
    for read_ahead in (False, True):
        for reuse in (True, False):
            llm, _ = load_model(model, LoadOptions(n_ctx=1024, n_batch=64, n_threads=2))
            reported: list[list[int]] = []
            try:
                answers = []
                for tokens in prompts:
                    chunks: list[int] = []
                    on_tokens = chunks.append if read_ahead else None
                    answers.append(greedy_completion(llm, tokens, 10, reuse=reuse, on_tokens=on_tokens))
                    reported.append(chunks)
            finally:
                llm.close()
            runs[read_ahead, reuse] = answers
            if read_ahead:
                # whole batches, never the one holding the prompt's last token
                assert all(c == 64 for chunks in reported for c in chunks)
                assert all(sum(c) < len(t) for c, t in zip(reported, prompts, strict=True))
                assert sum(map(len, reported[:1])) == (len(prompts[0]) - 1) // 64
                assert (reported[-1] == []) == reuse  # kept whole, nothing left to read; else read again
    assert runs[True, True] == runs[False, True] and runs[True, False] == runs[False, False]
    assert [text for text, _ in runs[True, True]] == [text for text, _ in runs[True, False]]


def test_progress_moves_inside_a_long_trial(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    """A long prompt reports its tokens as they are read, not only when the trial ends; labels say what they count."""
    result = run_cli("passkey", tiny_model, "--lengths", "1600", "--trials", "1", "--compare", "none", "-t", "2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " tokens  " in line]
    during = [line for line in lines if not line.lstrip().startswith("100%")]
    assert during, result.stderr  # a plain line before the trial ended (stderr is no terminal)
    total = during[0].split("/")[1].split()[0]  # the prompt's tokens: at or just below 1,600
    assert f"512/{total} tokens  none, trial 1/1 (1,600 tokens): 0/0 found" in during[0]
    assert lines[-1].lstrip().startswith("100%") and f"{total}/{total} tokens" in lines[-1]
    assert f"{total}/{total} tokens  none, trial 1/1 (1,600 tokens): 1/1 found" in lines[-1] or "0/1 found" in lines[-1]


@pytest.mark.slow
def test_smollm2_finds_the_key_at_1k_and_2k(run_cli, tmp_path: Path) -> None:
    record_path = tmp_path / "run.json"
    result = run_cli("passkey", "--lengths", "1k,2k", "--trials", "4", "--seed", "1", "--json", record_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(record_path.read_text())
    accuracy = {s["length"]: s["accuracy"] for s in record["summary"]}
    assert accuracy[1024] >= 0.75 and accuracy[2048] >= 0.75
    assert "Passkey retrieval accuracy" in result.stdout and "passkey context" in result.stdout
    # the JSON record's schema
    assert record["schema"] == 1
    assert record["model"]["architecture"] == "llama" and record["model"]["context_length"] == 8192
    assert record["settings"] == {
        "lengths": [1024, 2048], "trials": 4, "depths": "random", "seed": 1, "variants": ["as-is"], "reuse": True,
        "protocol": {"seed": 1, "depths": None, "answer_tokens": 10},
    }  # fmt: skip
    assert len(record["model"]["header_sha256"]) == 64
    assert set(record["software"]) == {"yarn-cli", "llama-cpp-python", "gguf"}
    assert len(record["trials"]) == 8
    trial = record["trials"][0]
    assert set(trial) == {
        "variant", "length", "index", "prompt_tokens", "depth", "key", "output", "answer", "correct",
        "seconds", "evaluated_tokens", "server_prompt_tokens", "truncated",
    }  # fmt: skip
    assert trial["server_prompt_tokens"] is None and trial["truncated"] is False  # a local run
    assert all(1024 * 0.99 <= t["prompt_tokens"] <= 1024 for t in record["trials"] if t["length"] == 1024)
    assert record["passkey_context"]["as-is"] == 2048
    assert record["evaluated_tokens"] == sum(t["evaluated_tokens"] for t in record["trials"])


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--lengths", "abc"], "cannot read 'abc' as a length"),
            (["--lengths", "40"], "a length of 40 tokens is too short"),
            (["--trials", "0"], "--trials must be at least 1"),
            (["--compare", "yarn"], "cannot read the variant 'yarn'"),
            (["--compare", "yarn:0.5"], "cannot read the variant 'yarn:0.5'"),
            (["--compare", "as-is,dynamic"], "cannot read the variant 'dynamic'"),
            (["--depths", "2"], "--depths must be numbers between 0 and 1"),
            (["--lengths", "4000k"], "the KV cache for 4096018 tokens needs"),
        ]
    ),
)
def test_bad_input(run_cli, args: list[str], expected: str) -> None:
    result = run_cli("passkey", *args)
    assert result.returncode == 1
    assert expected in error_line(result)


def test_scaled_variants_need_rope(run_cli, tmp_path: Path) -> None:
    bloom = write_tiny_llama(tmp_path / "bloom.gguf", arch="bloom")
    result = run_cli("passkey", bloom, "--lengths", "600", "--compare", "none,yarn:2")
    assert result.returncode == 1
    assert "bloom models use ALiBi attention biases, not RoPE: yarn:2 cannot apply" in error_line(result)
