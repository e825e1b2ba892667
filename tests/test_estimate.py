"""A run's time before it starts: the speed measured in the real llama.cpp, the shape it grows with, the plan line,
--dry-run, a default sweep cut to the memory, and the prompt search the plan waits on; at a 7B's size through a
sparse file with a 7B's real shapes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_model import HEAD_DIM, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, N_LAYER, N_VOCAB, write_7b_shaped

from yarn_cli.backend import Speed
from yarn_cli.cli.render import duration
from yarn_cli.evals.estimate import Estimate, completion_seconds
from yarn_cli.evals.passkey import PasskeySettings, largest_within
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.memory import available_memory
from yarn_cli.llama.speed import ATTENTION_EFFICIENCY, measure_speed
from yarn_cli.model import open_model

PLAN = re.compile(
    r"Plan: (?P<what>.+), (?P<tokens>[\d,]+) prompt tokens to evaluate; about (?P<time>[^()]+) here "
    r"\(measured: (?P<size>\d+) prompt tokens in [\d.]+ s, 4 generated in [\d.]+ s\)\."
)
SPEED = Speed(prompt_token=0.01, generated_token=0.05, prompt_growth=0.001, generated_growth=0.0005, scoring_factor=1.5)


def test_a_prompt_costs_more_the_later_its_tokens_sit() -> None:
    assert SPEED.prompt_seconds(0, 100) == pytest.approx(0.01 * 100 * (1 + 0.001 * 50))
    assert SPEED.prompt_seconds(900, 1000) == pytest.approx(0.01 * 100 * (1 + 0.001 * 950))
    assert SPEED.prompt_seconds(0, 100, scored=True) == pytest.approx(1.5 * SPEED.prompt_seconds(0, 100))
    assert SPEED.generated_seconds(10, 1000) == pytest.approx(0.05 * 10 * (1 + 0.0005 * 1005))
    # a kept prefix is free: only the new tokens are read
    assert completion_seconds(SPEED, 1000, 100, 10) == pytest.approx(
        SPEED.prompt_seconds(900, 1000) + SPEED.generated_seconds(10, 1000)
    )


def test_the_time_left_follows_the_estimate_scaled_by_the_real_speed() -> None:
    estimate = Estimate.of([(100, 1.0), (300, 6.0), (100, 3.0)], SPEED)
    assert estimate.total_seconds == 10.0
    assert estimate.seconds_done(0) == 0.0
    assert estimate.seconds_done(100) == 1.0
    assert estimate.seconds_done(250) == pytest.approx(1.0 + 6.0 * 150 / 300)
    assert estimate.seconds_done(500) == 10.0
    assert estimate.seconds_left(0, 0.0) == 10.0  # nothing done: the estimate as it is
    # the first job took twice its estimate: the rest will too
    assert estimate.seconds_left(100, 2.0) == pytest.approx(9.0 * 2.0)
    assert estimate.seconds_left(500, 20.0) == 0.0


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.4, "0 s"), (42, "42 s"), (89, "89 s"), (150, "2 min"), (5340, "89 min"), (5400, "1 h 30 min"),
     (7200, "2 h"), (47 * 3600, "47 h"), (2 * 86400 + 3 * 3600 + 100, "2 days 3 h"), (3 * 86400, "3 days")],
)  # fmt: skip
def test_a_duration_is_said_as_people_say_it(seconds: float, said: str) -> None:
    assert duration(seconds) == said


@given(
    steps=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=400),
    target=st.integers(min_value=0, max_value=600),
    guess=st.integers(min_value=0, max_value=500),
)
@settings(max_examples=300, deadline=None)
def test_the_prompt_search_finds_the_largest_size_within_the_target(steps: list[int], target: int, guess: int) -> None:
    """Against every size counted: the largest whose count is within the target, from any guess."""
    counts = [0, *(sum(steps[: i + 1]) for i in range(len(steps)))]  # tokens for 0..len(steps) characters
    most = len(counts) - 1
    calls: list[int] = []

    def count(n: int) -> int:
        calls.append(n)
        return counts[n]

    fitting = [n for n in range(most + 1) if counts[n] <= target]
    if fitting[-1] == most:  # the text never outgrows the target: refused, as a tokenizer that does not tokenize
        with pytest.raises(Exception, match="not tokenizing"):
            largest_within(count, target, guess, most)
        return
    assert largest_within(count, target, guess, most) == fitting[-1]
    assert len(calls) <= 4 * math.log2(most + 2) + 4


def test_a_bumpy_count_still_lands_on_an_edge_of_the_target() -> None:
    """Tokenizers merge: one more character can take a token away. The size found is still within the target,
    and one more character is not."""
    counts = [n // 3 + (1 if n % 7 == 3 else 0) for n in range(3000)]
    for target in (10, 333, 700, 998):
        n = largest_within(lambda c: counts[c], target, 500, len(counts) - 1)
        assert counts[n] <= target < counts[n + 1]


def test_the_prompt_search_is_short_on_the_real_tokenizer(smollm2: Path) -> None:
    from yarn_cli.evals.passkey import PromptBuilder, TrialSpec
    from yarn_cli.llama.evaluation import vocabulary

    with vocabulary(open_model(smollm2)) as vocab:
        calls: list[int] = []

        def tokenize(text: str) -> list[int]:
            calls.append(len(text))
            return vocab.tokenize(text, add_bos=True)

        builder = PromptBuilder(tokenize)
        for length, depth in ((1024, 0.3), (8192, 0.9), (16000, 0.5)):
            calls.clear()
            prompt = builder.build(TrialSpec(length=length, index=0, key=12345, depth=depth))
            assert len(prompt.tokens) in (length, length - 1)  # at the target, or one below where a merge says so
            assert len(calls) <= 8, calls


def test_the_model_shape_says_what_a_token_costs(smollm2: Path, tmp_path: Path) -> None:
    seven_b = open_model(write_7b_shaped(tmp_path / "7b.gguf")).compute
    kv = N_HEAD_KV * HEAD_DIM
    per_layer = N_EMBD * N_EMBD * 2 + 2 * kv * N_EMBD + 3 * N_FF * N_EMBD  # q, o, k, v, gate, up, down
    assert seven_b.output_params == N_VOCAB * N_EMBD
    assert seven_b.matmul_params == N_LAYER * per_layer + N_VOCAB * N_EMBD  # the embedding is a lookup
    assert seven_b.attention_flops == 2 * N_LAYER * N_HEAD * 2 * HEAD_DIM
    assert seven_b.prompt_growth == pytest.approx(seven_b.attention_flops / (2 * N_LAYER * per_layer))
    smol = open_model(smollm2).compute  # tied embeddings: the token embedding is the output projection too
    assert smol.output_params == 49152 * 576
    assert smol.matmul_params > smol.output_params and smol.scoring_factor > 1.2


def test_a_mixture_of_experts_counts_the_experts_a_token_uses(tmp_path: Path) -> None:
    from archs import N_EXPERT, N_EXPERT_USED, write_tiny

    moe = open_model(write_tiny(tmp_path / "moe.gguf", "qwen3moe"))
    header = moe.header
    experts = sum(math.prod(t.shape) for t in header.tensors if "_exps." in t.name)
    others = sum(math.prod(t.shape) for t in header.tensors
                 if len(t.shape) >= 2 and "_exps." not in t.name and t.name != "token_embd.weight")  # fmt: skip
    assert moe.compute.matmul_params == others + round(experts * N_EXPERT_USED / N_EXPERT)


def test_a_split_model_is_counted_over_its_splits(tmp_path: Path) -> None:
    """llama.cpp reads the first split's metadata and every split's tensors; so does the count. With a split
    missing, the layers of the others stand for all."""
    from ggufs import write_tiny_llama

    whole = open_model(write_tiny_llama(tmp_path / "whole.gguf")).compute
    (tmp_path / "split").mkdir()
    first = open_model(write_tiny_llama(tmp_path / "split" / "tiny.gguf", split_max_tensors=8))
    assert first.split is not None and len(first.header.tensors) < 16
    assert first.compute == whole
    (tmp_path / "split" / "tiny-00003-of-00003.gguf").unlink()
    partial = open_model(first.path).compute
    assert partial.attention_flops == whole.attention_flops and partial.output_params == whole.output_params
    assert partial.matmul_params == pytest.approx(whole.matmul_params, rel=0.5)


def test_the_speed_is_measured_in_the_real_llama_cpp(tiny_model: Path) -> None:
    model = open_model(tiny_model)
    llm, _ = load_model(model, LoadOptions(n_ctx=256, n_threads=1))
    try:
        speed = measure_speed(llm, model, budget_tokens=40)
        assert llm.n_tokens == 0  # the context is left empty for the run
    finally:
        llm.close()
    assert speed.prompt_token > 0 and speed.generated_token > 0
    assert speed.prompt_growth == pytest.approx(model.compute.prompt_growth * ATTENTION_EFFICIENCY)
    size = int(re.match(r"(\d+) prompt tokens", speed.measured).group(1))  # type: ignore[union-attr]
    assert 16 <= size <= 40  # the budget bounds the measurement


def test_a_run_says_its_plan_and_time_before_its_first_trial(run_cli, tiny_model: Path) -> None:
    result = run_cli("passkey", tiny_model, "--lengths", "400,500", "--trials", "2", "-t", "1")
    assert result.returncode == 0, result.stderr
    plan = PLAN.search(result.stderr)
    assert plan is not None, result.stderr
    assert plan["what"] == "4 trials"
    assert result.stderr.index("Plan:") < result.stderr.index("trial 1/4")


def test_dry_run_plans_and_stops(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    result = run_cli(
        "passkey", tiny_model, "--lengths", "400", "--trials", "3", "--json", "run.json", "--dry-run", "-t", "1"
    )
    assert result.returncode == 0, result.stderr
    assert PLAN.search(result.stderr)["what"] == "3 trials"  # type: ignore[index]
    assert result.stdout == "" and "trial 1/" not in result.stderr
    assert not (tmp_path / "run.json").exists()


@pytest.mark.slow
def test_perplexity_and_ruler_plan_too(run_cli, tiny_model: Path, smollm2: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97} is here." for i in range(3000)))
    result = run_cli("perplexity", tiny_model, "--text", text, "--contexts", "128,256", "--compare", "none,yarn:2",
                     "--reference", "none", "--dry-run", "-t", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert PLAN.search(result.stderr)["what"] == "2 variant(s) x 2 context(s), 1 chunk(s)"  # type: ignore[index]
    assert result.stdout == ""
    result = run_cli("ruler", smollm2, "--tasks", "niah_single_1", "--lengths", "1k", "--samples", "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert PLAN.search(result.stderr)["what"].startswith("1 samples to run")  # type: ignore[index]


@pytest.mark.slow
def test_a_default_sweep_on_a_7b_is_cut_to_the_memory_and_estimated(run_cli, tmp_path: Path) -> None:
    """A 7B's shapes with a context no machine has the memory for: the default lengths stop where the KV cache
    still fits, the plan says so and what it will cost, and --dry-run leaves after measuring in a short context."""
    model = write_7b_shaped(tmp_path / "7b-16m.gguf", context_length=2**24)
    free = available_memory()
    assert free is not None
    result = run_cli("passkey", model, "--dry-run", "--trials", "1", timeout=600)
    assert result.returncode == 0, result.stderr
    cut = re.search(r"The default --lengths stop at ([\d,]+) tokens, the longest whose KV cache fits", result.stderr)
    assert cut is not None, result.stderr
    longest = int(cut.group(1).replace(",", ""))
    per_token = N_LAYER * 2 * N_HEAD_KV * HEAD_DIM * 2  # f16 K and V
    assert longest * per_token < 1.25 * free and 2 * longest * per_token > 0.75 * free  # memory moves a little
    plan = PLAN.search(result.stderr)
    assert plan is not None, result.stderr
    assert plan["what"] == f"{int(math.log2(longest // 1024)) + 1} trials"  # 1k, 2k, ... up to the cut
    assert re.fullmatch(r"\d+ (s|min|h( \d+ min)?|days( \d+ h)?)", plan["time"]), plan["time"]


def test_ctrl_c_while_a_dry_run_measures_writes_nothing(tiny_model: Path, tmp_path: Path) -> None:
    """Interrupted during the measurement: exit 130, no record made (the run's own Ctrl-C keeps finished trials)."""
    from yarn_cli.evals.passkey_run import run_passkey
    from yarn_cli.llama.llama_backend import LlamaBackend
    from yarn_cli.rope.variants import parse_variants

    model = open_model(tiny_model)
    backend = LlamaBackend(model, parse_variants("as-is", model.rope), LoadOptions(n_threads=1))

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    with backend, pytest.raises(KeyboardInterrupt):
        run_passkey(backend, PasskeySettings(lengths=[400], trials=1), json_path=tmp_path / "r.json",
                    on_start=interrupted, plan_only=True)  # fmt: skip
    assert not (tmp_path / "r.json").exists()


def test_a_record_keeps_nothing_of_a_dry_run(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    """A dry run next to an earlier record reads it (its resumed trials are not planned) and changes nothing."""
    first = run_cli("passkey", tiny_model, "--lengths", "400", "--trials", "1", "--json", "r.json", "-t", "1")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "r.json").read_bytes()
    again = run_cli("passkey", tiny_model, "--lengths", "400", "--trials", "3", "--json", "r.json", "--dry-run")
    assert again.returncode == 0, again.stderr
    assert "Resuming r.json: 1 trials already done." in again.stderr
    assert PLAN.search(again.stderr)["what"] == "2 trials"  # type: ignore[index]
    assert (tmp_path / "r.json").read_bytes() == before
    assert json.loads(before)["trials"]
