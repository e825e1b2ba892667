"""chat's context without -c: a one-shot sized to its prompt and reply, a conversation that starts at 4,096
tokens and grows, at SmolLM2's size and at a 7B's (a sparse file with a 7B's real shapes), in the real llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sparse_model import CONTEXT as SEVEN_B_CONTEXT
from sparse_model import write_7b_shaped
from terminal import Terminal

from yarn_cli.conversation import Conversation
from yarn_cli.llama.chat_context import CHAT_START, chat_context, rounded
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.memory import context_limit
from yarn_cli.llama.session import ChatSession
from yarn_cli.model import open_model
from yarn_cli.sampling import Sampling

# About 2,000 SmolLM2 tokens of varied text, so that two of them outgrow a 4,096-token context.
LONG = " ".join(f"Item {i} of the list is the word {w}." for i, w in enumerate(["river", "stone", "cloud"] * 67))


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_7b_shaped(tmp_path_factory.mktemp("sparse") / "qwen2-7b-shaped.Q4_K_M.gguf")


def test_a_conversation_starts_at_4096_and_may_grow_to_the_model_context(smollm2: Path) -> None:
    model = open_model(smollm2)
    sized = chat_context(model, 0, None, -1)
    assert (sized.start, sized.limit) == (CHAT_START, 8192)
    assert sized.reason == "4096 tokens, grows up to 8192 as the conversation needs; -c N to fix"


def test_a_one_shot_starts_at_its_prompt_and_reply(smollm2: Path) -> None:
    model = open_model(smollm2)
    short = chat_context(model, 0, "Hi", 512)
    assert short.start == rounded(len("Hi") + 256 + 512) == 1024
    assert short.limit == 8192
    # a long prompt starts small: it is counted once loaded, and the context made to measure then
    assert chat_context(model, 0, "word " * 5000, 512).start == 1024


def test_the_limit_is_what_the_memory_allows_at_a_7b_size(seven_b: Path) -> None:
    """A 7B's 131,072 tokens need 7 GiB of KV cache: the limit is the model's or half the free memory."""
    model = open_model(seven_b)
    limit, capped = context_limit(model)
    per_token = model.shape.kv_cache_bytes(1)
    assert per_token == 28 * 2 * 4 * 128 * 2  # layers x (K, V) x KV heads x head dim x f16
    sized = chat_context(model, 0, None, -1)
    assert sized.start == CHAT_START and sized.limit == limit <= SEVEN_B_CONTEXT
    assert (capped is None) == (limit == SEVEN_B_CONTEXT)
    if capped:
        assert capped in sized.reason and "GiB of KV cache" in capped


def _session(smollm2: Path, n_ctx: int, limit: int | None) -> ChatSession:
    llm, _ = load_model(open_model(smollm2), LoadOptions(n_ctx=n_ctx, n_threads=2))
    return ChatSession(llm, Sampling(temp=0.0, max_tokens=12, stop_loops=False), context_limit=limit)


def test_a_grown_context_answers_as_one_that_was_large_from_the_start(smollm2: Path) -> None:
    grown = _session(smollm2, 4096, 8192)
    fixed = _session(smollm2, 8192, None)
    try:
        for session in (grown, fixed):
            session.conversation = Conversation(
                turns=[{"role": "user", "content": LONG}, {"role": "assistant", "content": "Noted."}]
            )
        _, stats = grown.reply("Repeat the last item.")
        assert stats.resized_from == 0 and grown.n_ctx == 4096  # 2,000 tokens fit: no change yet
        fixed.reply("Repeat the last item.")
        reply, stats = grown.reply(LONG + " Which word is item 3?")
        assert stats.prompt_tokens > 4096 - 12
        assert stats.resized_from == 4096 and grown.n_ctx == stats.n_ctx == 8192 and grown.llm.n_ctx() == 8192
        assert stats.prompt_evaluated == stats.prompt_tokens  # the whole conversation, evaluated again
        assert stats.dropped_turns == 0
        expected, _ = fixed.reply(LONG + " Which word is item 3?")
        assert reply == expected  # greedy: the same tokens as a context that never changed
    finally:
        grown.llm.close()
        fixed.llm.close()


def test_a_fixed_context_drops_turns_instead_of_growing(smollm2: Path) -> None:
    session = _session(smollm2, 4096, None)
    try:
        session.conversation = Conversation(
            turns=[{"role": "user", "content": LONG}, {"role": "assistant", "content": "Noted."}]
        )
        _, stats = session.reply(LONG + " Which word is item 3?")
        assert stats.resized_from == 0 and session.n_ctx == 4096 and stats.dropped_turns == 1
    finally:
        session.llm.close()


@pytest.mark.slow
def test_the_repl_grows_past_4096_when_the_conversation_needs_it(tmp_path: Path) -> None:
    saved = {
        "system": None,
        "messages": [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Noted."}],
    }
    (tmp_path / "long.json").write_text(json.dumps(saved))
    term = Terminal("--temp", "0", "-n", "8", cwd=tmp_path)
    assert "context: 4096 tokens, grows up to 8192 as the conversation needs; -c N to fix" in term.expect("> ")
    term.type("/load long.json\r")
    term.expect("Loaded 2 messages")
    term.expect("> ")
    term.type("/stats\r")
    assert "of 4096 (it grows up to 8192 as needed)" in term.expect("> ")
    # a second long message: the two no longer fit 4,096 tokens
    for start in range(0, len(LONG), 1000):  # lines shorter than a terminal's line limit
        term.type(LONG[start : start + 1000] + "\\\r")
    term.type(" Which word is item 3?\r")
    seen = term.expect("tok/s")
    assert "context grown from 4096 to 8192 tokens for this reply" in seen
    assert "dropped" not in seen
    term.expect("> ")
    term.type("/stats\r")
    assert "tokens of 8192 in the context" in term.expect("> ")
    term.type("/exit\r")
    assert term.wait() == 0


@pytest.mark.slow
def test_a_one_shot_on_a_7b_needs_no_c(run_cli, seven_b: Path) -> None:
    """The 7B-shaped file answers a short one-shot in a context of its size, not the model's 131,072."""
    result = run_cli("chat", str(seven_b), "-p", "Hi", "-n", "3", "--temp", "0", "--json")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["n_ctx"] == 512 and settings["n_ctx_train"] == SEVEN_B_CONTEXT
    assert CHAT_START <= settings["n_ctx_limit"] <= SEVEN_B_CONTEXT  # the model's, or what memory allowed
    assert json.loads(result.stdout)["completion_tokens"] == 3
