"""``chat --yarn dynamic``: unscaled while the conversation fits, the smallest ladder scale after, never down.

On the tiny llama model (context 256) in the real llama.cpp, so the thresholds are crossed in a
few turns: each reply is compared with a fresh static run of the same conversation at the scale
the session chose.
"""

from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import pytest
from gguf import GGUFValueType
from ggufs import write_tiny_llama
from terminal import Terminal

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.llama.dynamic_yarn import DynamicYarn
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.session import MIN_REPLY_ROOM, ChatSession
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import Method
from yarn_cli.rope.yarn_ladder import LADDER, dynamic_factor
from yarn_cli.sampling import Sampling

N_CTX = 1024
# One token per reply: the random model's byte tokens often start invalid UTF-8, and llama-cpp-python
# 0.3.36 then fails to decode a few tokens on ("failed to find a memory slot"), whatever the scaling.
GREEDY = Sampling(temp=0.0, max_tokens=1)
LONG = "the a and of " * 40  # a few hundred tokens of the tiny vocabulary


@pytest.mark.parametrize(
    ("tokens", "factor"),
    [
        (1, None),
        (256, None),
        (257, 1.25),
        (320, 1.25),
        (321, 1.5),
        (512, 2.0),
        (513, 3.0),
        (64 * 256 + 1, 64 + 1 / 256),
    ],
)
def test_the_smallest_ladder_factor_that_holds_the_conversation(tokens: int, factor: float | None) -> None:
    assert dynamic_factor(tokens, 256) == (pytest.approx(factor) if factor else None)
    assert list(LADDER) == sorted(LADDER)


def static_reply(model: Path, factor: float | None, turns: list[dict[str, str]]) -> str:
    """The same conversation in a fresh session, loaded once with a fixed scale."""
    opened = open_model(model)
    scaling = opened.rope.as_it_came() if factor is None else opened.rope.runtime(Method.YARN, factor)
    llm, _ = load_model(opened, LoadOptions(n_ctx=N_CTX, scaling=scaling, n_threads=1))
    try:
        session = ChatSession(llm, GREEDY)
        session.conversation.turns = [dict(t) for t in turns[:-1]]
        return session.reply(turns[-1]["content"])[0]
    finally:
        llm.close()


def test_the_scale_grows_at_the_threshold_and_each_reply_equals_a_static_run(tiny_model: Path) -> None:
    dynamic = DynamicYarn(open_model(tiny_model), LoadOptions(n_ctx=N_CTX, n_threads=1))
    llm, _ = dynamic.load(None)
    session = ChatSession(llm, GREEDY, dynamic=dynamic)
    try:
        reply, stats = session.reply("the")
        assert (stats.ladder_factor, stats.rescaled) == (None, False)
        assert stats.scale == 1.0  # the model as it came: no scaling
        assert reply == static_reply(tiny_model, None, [{"role": "user", "content": "the"}])

        tokens, _ = session.prompt_tokens([*session.conversation.messages(), {"role": "user", "content": LONG}])
        expected = dynamic_factor(len(tokens) + MIN_REPLY_ROOM, 256)
        assert expected is not None and expected > 1
        reply, stats = session.reply(LONG)
        assert (stats.ladder_factor, stats.rescaled, stats.rescaled_from) == (expected, True, None)
        assert stats.scale == expected
        loaded = session.llm.model  # llama.cpp's own figures for the model the session now runs
        assert llama_cpp.llama_model_rope_freq_scale_train(loaded) == pytest.approx(1 / expected)
        assert llama_cpp.llama_model_n_ctx_train(loaded) == round(256 * expected)
        assert reply == static_reply(tiny_model, expected, session.conversation.turns[:-1])

        reply, stats = session.reply("it")  # a short turn: the scale stays where it is
        assert (stats.ladder_factor, stats.scale, stats.rescaled) == (expected, expected, False)
        assert reply == static_reply(tiny_model, expected, session.conversation.turns[:-1])

        session.clear()  # a new conversation starts as the model came
        assert llama_cpp.llama_model_rope_freq_scale_train(session.llm.model) == 1.0
        reply, stats = session.reply("the")
        assert (stats.ladder_factor, stats.scale, stats.rescaled) == (None, 1.0, False)
        assert reply == static_reply(tiny_model, None, [{"role": "user", "content": "the"}])
    finally:
        session.llm.close()


def test_a_converted_file_starts_from_its_original_state(tiny_model: Path) -> None:
    converted = convert_file(tiny_model, ConvertRequest(factor=4.0)).outputs[0].path
    dynamic = DynamicYarn(open_model(converted), LoadOptions(n_ctx=N_CTX, n_threads=1))
    llm, effective = dynamic.load(None)
    try:
        assert effective.scaling_type == "none" and effective.n_ctx_train == 256
        reply = ChatSession(llm, GREEDY, dynamic=dynamic).reply("the")[0]
    finally:
        llm.close()
    assert reply == static_reply(tiny_model, None, [{"role": "user", "content": "the"}])


@pytest.mark.slow
def test_one_shot_chooses_the_scale_from_the_prompt(run_cli, tiny_model: Path) -> None:
    args = ("chat", tiny_model, "--yarn", "dynamic", "-c", str(N_CTX), "--temp", "0", "-n", "1", "-t", "1", "--json")
    short = json.loads(run_cli(*args, "-p", "the").stdout)
    assert short["scale"] == 1  # the model as it came ran unscaled: a number, never null
    assert (short["settings"]["rope_scaling"], short["settings"]["n_ctx_train"]) == ("none", 256)
    long = run_cli(*args, "-p", LONG)
    assert long.returncode == 0, long.stderr
    scaled = json.loads(long.stdout)
    assert scaled["scale"] in LADDER
    # the settings the reply ran with, not those of the load before the rescale
    ran = scaled["settings"]
    assert ran["rope_scaling"] == "yarn" and ran["rope_scale"] == pytest.approx(scaled["scale"], rel=1e-5)
    assert ran["n_ctx_train"] == 256 * scaled["scale"]
    assert ran["trained_context"] == 256  # llama.cpp's n_ctx_train grew with the scale; the model's did not
    shown = run_cli(*args[:-1], "-p", LONG)
    assert "--yarn dynamic: YaRN x" in shown.stderr and "from this reply (was the model as it came)" in shown.stderr
    refused = run_cli("chat", tiny_model, "--yarn", "dynamic", "--rope-scale", "2", "-p", "the")
    assert refused.returncode == 1 and "--yarn dynamic chooses the scaling itself" in refused.stderr


def test_the_repl_says_when_the_scale_changes(tiny_model: Path, tmp_path: Path) -> None:
    term = Terminal(str(tiny_model), "--yarn", "dynamic", "-c", str(N_CTX), "--temp", "0", "-n", "1", cwd=tmp_path)
    term.expect("> ")
    term.type("the\r")
    assert "YaRN x" not in term.expect("tok/s")
    term.expect("> ")
    term.type(LONG + "\r")
    shown = term.expect("tok/s")
    assert "--yarn dynamic: YaRN x" in shown and "(was the model as it came)" in shown
    factor = shown.split("--yarn dynamic: YaRN x")[1].split(" ")[0]
    term.expect("> ")
    term.type("/stats\r")
    stats = term.expect("> ")
    assert f"scale per reply: 1 as the model came; 2 YaRN x{factor} (rescaled in " in stats
    term.type("/clear\r")
    term.expect("Conversation cleared.")
    term.expect("> ")
    term.type("the\r")
    assert "YaRN x" not in term.expect("tok/s")
    term.expect("> ")
    term.type("/stats\r")
    assert "scale per reply: 1 as the model came\r" in term.expect("> ")
    term.type("/exit\r")
    assert term.wait() == 0


@pytest.mark.slow
def test_a_model_with_its_own_yarn_runs_at_its_factor_as_it_came(run_cli, tmp_path: Path) -> None:
    """YaRN x4 over 64 tokens in the file: x4 as it came, the ladder's factor times 4 after a rescale."""
    own = {
        "llama.rope.scaling.type": ("yarn", GGUFValueType.STRING),
        "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
        "llama.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
    }
    model = write_tiny_llama(tmp_path / "own-yarn.gguf", extra=own, extra_with_rope=True)
    args = ("chat", model, "--yarn", "dynamic", "-c", str(N_CTX), "--temp", "0", "-n", "1", "-t", "1")
    short = json.loads(run_cli(*args, "--json", "-p", "the").stdout)
    assert short["scale"] == short["settings"]["rope_scale"] == 4.0
    assert (short["settings"]["trained_context"], short["settings"]["n_ctx_train"]) == (64, 256)
    long = json.loads(run_cli(*args, "--json", "-p", LONG).stdout)
    factor = long["scale"] / 4
    assert factor in LADDER and long["settings"]["rope_scale"] == long["scale"]
    shown = run_cli(*args, "-p", LONG)
    assert shown.returncode == 0, shown.stderr
    assert "llama.cpp: n_ctx 1024 (trained 64), rope yarn x4 (original 64)" in shown.stderr
    assert f"--yarn dynamic: YaRN x{factor:g} (x{long['scale']:g} with the model's own YaRN) from this reply" in (
        shown.stderr
    )
