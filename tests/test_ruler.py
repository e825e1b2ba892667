"""``yarn-cli ruler`` on the real SmolLM2: the record, CSV, prompts and plot; resuming; reuse; variants; refusals.

Kept cheap: one or two samples of niah_single_1 at 1k. What the prompts hold and how they are
scored: tests/test_ruler_tasks.py; against a server: tests/test_served_ruler.py.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_drawn_png, error_line, sweep

from yarn_cli.llama.evaluation import Vocabulary
from yarn_cli.model import open_model

NIAH = ("ruler", "--tasks", "niah_single_1", "--lengths", "1k")


@pytest.fixture(scope="module")
def vocab(smollm2: Path) -> Iterator[Vocabulary]:
    vocabulary = Vocabulary(open_model(smollm2))
    yield vocabulary
    vocabulary.close()


def record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def outputs(path: Path) -> dict[tuple[str, str, int, int], tuple[list[str], str, int]]:
    return {(s["variant"], s["task"], s["length"], s["index"]): (s["outputs"], s["output"], s["prompt_tokens"])
            for s in record(path)["samples"]}  # fmt: skip


def test_a_run_writes_its_record_csv_prompts_and_plot(run_cli, tmp_path: Path, vocab: Vocabulary) -> None:
    result = run_cli(*NIAH, "--samples", "1", "--json", "r.json", "--csv", "r.csv", "--prompts", "p.jsonl",
                     "--plot", "r.png")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 samples to run (1 tasks x 1 lengths x 1 samples x 1 variants, less those done)" in result.stderr
    assert "RULER score (%), as-is" in result.stdout and "niah_single_1" in result.stdout
    assert "Effective context: the longest length whose mean over tasks reaches 85.6" in result.stdout
    run = record(tmp_path / "r.json")
    assert run["schema"] == 1 and run["model"]["architecture"] == "llama" and len(run["model"]["header_sha256"]) == 64
    assert run["settings"] == {
        "lengths": [1024], "tasks": ["niah_single_1"], "samples": 1, "seed": 0, "threshold": 85.6,
        "chat_template": False, "haystack": None, "variants": ["as-is"], "reuse": True,
        "protocol": {"seed": 0, "chat_template": False, "haystack": None},
    }  # fmt: skip
    assert set(run["software"]) == {"yarn-cli", "llama-cpp-python", "gguf"}
    [sample] = run["samples"]
    assert set(sample) == {
        "task", "length", "index", "variant", "prompt_tokens", "outputs", "output", "score", "seconds",
        "evaluated_tokens", "server_prompt_tokens", "truncated",
    }  # fmt: skip
    assert (sample["task"], sample["length"], sample["index"], sample["variant"]) == ("niah_single_1", 1024, 0, "as-is")
    assert 0.85 * 1024 <= sample["prompt_tokens"] + 128 <= 1024
    [expected] = sample["outputs"]
    assert expected.isdigit() and len(expected) == 7
    assert sample["score"] == (1.0 if expected in sample["output"] else 0.0) and 0 <= sample["score"] <= 1
    assert sample["truncated"] is False and sample["server_prompt_tokens"] is None
    assert sample["evaluated_tokens"] >= sample["prompt_tokens"]
    score = round(sample["score"] * 100, 2)
    assert run["summary"] == [
        {"variant": "as-is", "task": "niah_single_1", "length": 1024, "score": score, "samples": 1, "truncated": 0}
    ]
    assert run["means"] == [{"variant": "as-is", "length": 1024, "score": score}]
    assert run["effective_context"] == {"as-is": 1024 if score >= 85.6 else None}
    assert run["evaluated_tokens"] == sample["evaluated_tokens"] and run["truncated_samples"] == 0
    assert run["cost"] == [{"variant": "as-is", "task": "niah_single_1", "samples": 1,
                            "evaluated_tokens": sample["evaluated_tokens"], "seconds": sample["seconds"]}]  # fmt: skip

    # the prompts as RULER's JSONL: input and answer prefix are the text completed
    [line] = (tmp_path / "p.jsonl").read_text().splitlines()
    prompt = json.loads(line)
    assert set(prompt) == {"index", "input", "outputs", "length", "answer_prefix", "task"}
    assert prompt["outputs"] == sample["outputs"] and prompt["task"] == "niah_single_1" and prompt["index"] == 0
    assert "One of the special magic numbers for " in prompt["input"] and f" is: {expected}." in prompt["input"]
    assert prompt["answer_prefix"].startswith(" The special magic number for ")
    assert len(vocab.tokenize(prompt["input"] + prompt["answer_prefix"], add_bos=True)) == sample["prompt_tokens"]
    assert prompt["length"] == sample["prompt_tokens"] + 128

    with (tmp_path / "r.csv").open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["task"] == "niah_single_1" and row["output"] == sample["output"] and row["truncated"] == "False"
    assert json.loads(row["outputs"]) == sample["outputs"] and float(row["score"]) == sample["score"]
    assert_drawn_png(tmp_path / "r.png")


@pytest.mark.slow
def test_a_run_resumes_from_its_record(run_cli, tmp_path: Path) -> None:
    first = run_cli(*NIAH, "--samples", "1", "--json", "r.json")
    assert first.returncode == 0, first.stderr
    before = record(tmp_path / "r.json")["samples"]
    second = run_cli(*NIAH, "--samples", "2", "--json", "r.json", "--csv", "r.csv")
    assert second.returncode == 0, second.stderr
    assert "Resuming r.json: 1 samples already done." in second.stderr
    assert "1 samples to run" in second.stderr
    after = record(tmp_path / "r.json")
    assert after["settings"]["samples"] == 2 and [s["index"] for s in after["samples"]] == [0, 1]
    assert after["samples"][0] == before[0]  # kept, not run again (its seconds too)
    assert after["samples"][1]["outputs"] != before[0]["outputs"]
    assert after["evaluated_tokens"] == sum(s["evaluated_tokens"] for s in after["samples"])
    assert len((tmp_path / "r.csv").read_text().strip().splitlines()) == 3
    saved = (tmp_path / "r.json").read_bytes()

    # a record of other settings is refused in one line, and left as it was
    for other in (["--seed", "5"], ["--chat-template"]):
        refused = run_cli(*NIAH, "--samples", "2", "--json", "r.json", *other)
        assert refused.returncode == 1
        line = error_line(refused)
        assert "r.json holds a run with another --seed, --chat-template or --haystack" in line
        assert "choose another --json file to keep it, or the same settings to resume it" in line
    assert (tmp_path / "r.json").read_bytes() == saved

    # the whole run done: nothing to run again
    done = run_cli(*NIAH, "--samples", "2", "--json", "r.json")
    assert done.returncode == 0, done.stderr
    assert "Resuming r.json: 2 samples already done." in done.stderr and "0 samples to run" in done.stderr
    assert record(tmp_path / "r.json")["samples"] == after["samples"]


@pytest.mark.slow
def test_no_reuse_gives_the_same_outputs_and_evaluates_more(run_cli, tmp_path: Path) -> None:
    reused = run_cli(*NIAH, "--samples", "2", "--json", "reused.json")
    fresh = run_cli(*NIAH, "--samples", "2", "--no-reuse", "--json", "fresh.json")
    assert reused.returncode == 0 and fresh.returncode == 0, reused.stderr + fresh.stderr
    assert outputs(tmp_path / "reused.json") == outputs(tmp_path / "fresh.json")
    assert len(outputs(tmp_path / "fresh.json")) == 2
    kept, scratch = record(tmp_path / "reused.json"), record(tmp_path / "fresh.json")
    assert kept["settings"]["reuse"] is True and scratch["settings"]["reuse"] is False
    # the second prompt shares the template and the noise before its needle with the first
    assert kept["evaluated_tokens"] < scratch["evaluated_tokens"]
    assert all(s["evaluated_tokens"] > s["prompt_tokens"] for s in scratch["samples"])  # every prompt whole


@pytest.mark.slow
def test_variants_run_on_the_same_samples(run_cli, tmp_path: Path) -> None:
    result = run_cli(*NIAH, "--samples", "1", "--compare", "none,yarn:2", "--json", "r.json")
    assert result.returncode == 0, result.stderr
    assert "RULER score (%), none" in result.stdout and "RULER score (%), yarn:2" in result.stdout
    assert "2 samples to run (1 tasks x 1 lengths x 1 samples x 2 variants" in result.stderr
    run = record(tmp_path / "r.json")
    assert run["settings"]["variants"] == ["none", "yarn:2"]
    assert set(run["effective_context"]) == {"none", "yarn:2"}
    none, yarn = run["samples"]
    assert (none["variant"], yarn["variant"]) == ("none", "yarn:2")
    assert none["outputs"] == yarn["outputs"] and none["prompt_tokens"] == yarn["prompt_tokens"]
    assert [row["variant"] for row in run["summary"]] == ["none", "yarn:2"]


@pytest.mark.slow
def test_a_chat_template_wraps_smollm2s_prompts(run_cli, tmp_path: Path, vocab: Vocabulary) -> None:
    result = run_cli(*NIAH, "--samples", "1", "--chat-template", "--json", "r.json", "--prompts", "p.jsonl")
    assert result.returncode == 0, result.stderr
    run = record(tmp_path / "r.json")
    assert run["settings"]["chat_template"] is True and run["settings"]["protocol"]["chat_template"] is True
    [sample] = run["samples"]
    prompt = json.loads((tmp_path / "p.jsonl").read_text())
    # the record's prompt is the JSONL's input and answer prefix with the template's turns around them
    bare = len(vocab.tokenize(prompt["input"] + prompt["answer_prefix"], add_bos=True))
    assert bare + 10 < sample["prompt_tokens"] and prompt["length"] == sample["prompt_tokens"] + 128 <= 1024
    assert prompt["length"] >= 0.85 * 1024


def test_a_chat_template_is_refused_for_a_model_without_one(run_cli, tiny_model: Path) -> None:
    result = run_cli("ruler", tiny_model, "--tasks", "niah_single_1", "--lengths", "2k", "--chat-template")
    assert result.returncode == 1
    assert "tiny.gguf has no chat template (tokenizer.chat_template): leave out --chat-template" in error_line(result)


SHORT_ESSAY = "The old farmer walked down the road. Mr. Darcy stayed at home. " * 10


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--tasks", "niah_single_9"], "unknown task 'niah_single_9' in --tasks: use all, niah, or niah_single_1"),
            (["--tasks", "qa_1"], "--tasks qa_1: qa_1 and qa_2 need SQuAD and HotpotQA, which cannot be had offline"),
            (
                ["--tasks", "vt,niah_single_2"],
                "niah_single_2 hides its needles in an essay: give a long plain text as --haystack FILE",
            ),
            (
                ["--tasks", "niah_single_2", "--haystack", "short.txt"],
                "--haystack short.txt is too short for niah_single_2 at 1,024 tokens: its 120 words fill",
            ),
            (["--tasks", "niah_single_2", "--haystack", "missing.txt"], "cannot read --haystack missing.txt"),
            (
                ["--tasks", "niah_single_1", "--lengths", "100"],
                "a length of 100 tokens is too short for niah_single_1: its shortest prompt and the 128 tokens",
            ),
            (["--lengths", "16000k"], "the KV cache for 16384008 tokens needs"),
            (["--samples", "0"], "--samples must be at least 1, got 0"),
            (["--threshold", "200"], "--threshold is a score in percent, from 0 to 100; got 200"),
            (["--server", "http://127.0.0.1:9/v1", "--compare", "yarn:2"], "--compare applies to a model run here"),
        ]
    ),
)
def test_bad_input(run_cli, tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "short.txt").write_text(SHORT_ESSAY)
    result = run_cli("ruler", "--tasks", "niah_single_1", "--lengths", "1k", *args)
    assert result.returncode == 1
    assert expected in error_line(result)
