"""``yarn-cli chat`` with the real SmolLM2 in the real llama.cpp: one-shot, pipes, JSON, REPL, limits."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from ggufs import write_tiny_llama
from helpers import error_line, expected_backend, sweep
from llama_cpp import Llama
from terminal import Terminal

from yarn_cli.conversation import Conversation, ends_in_loop
from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.errors import InputError
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.session import ChatSession, ContextOverflowError
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import ScalingOverride
from yarn_cli.sampling import Sampling

# The README's demo prompt: its greedy answer has a wide margin at every step on SmolLM2, plain and
# YaRN x2 (benchmarks/demo_prompt_margin.py), so it holds on other CPUs' arithmetic too.
QUESTION = "Complete the sentence: The capital of France is"
# the settings line printed once the model is loaded, before any later error
LLAMA_STATUS = ("llama.cpp: n_ctx",)


def test_one_shot_prints_only_the_reply(run_cli) -> None:
    result = run_cli("chat", "-p", QUESTION, "--temp", "0")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert result.stdout.endswith("\n") and "llama.cpp" not in result.stdout
    assert f"llama.cpp: n_ctx 1024 (trained 8192), rope none, freq_base 100000, {expected_backend()} (" in result.stderr
    assert "context: sized to the prompt and its reply (at most 8192); -c N to set" in result.stderr


@pytest.mark.slow
def test_prompt_from_a_pipe(run_cli, tmp_path: Path) -> None:
    import subprocess

    env = dict(os.environ, NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "yarn_cli", "chat", "--temp", "0", "--no-stream"],
        input=QUESTION,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_json_result(run_cli) -> None:
    result = run_cli("chat", "-p", QUESTION, "--temp", "0", "--json", "-c", "1024")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "Paris" in data["reply"]
    assert data["prompt_tokens"] > 10 and data["completion_tokens"] >= 1
    assert data["stopped"] == "eos"
    assert data["timings"]["generation_tokens_per_s"] > 0
    assert data["timings"]["first_token_ms"] > 0
    assert data["settings"]["n_ctx"] == 1024
    assert data["settings"]["rope_scaling"] == "none"
    assert data["settings"]["backend"] == expected_backend()
    # counted as llama.cpp counts them: SmolLM2's 30 blocks and the output layer
    assert data["settings"]["n_layers"] == 31
    assert data["settings"]["gpu_layers"] == (31 if expected_backend() != "CPU" else 0)
    assert data["mode"] == "chat"  # SmolLM2's file has a chat template
    assert data["scale"] == data["settings"]["rope_scale"] == 1  # the RoPE factor it ran with: none
    assert data["settings"]["n_ctx_train"] == data["settings"]["trained_context"] == 8192


@pytest.mark.parametrize("n_predict", sweep([3, 10, None]))
def test_completion_tokens_are_the_replys_tokens(run_cli, smollm2: Path, n_predict: int | None) -> None:
    """Cut short by -n or ended by the model, the count is the reply's tokens (not llama.cpp's decodes)."""
    asked = ["-n", str(n_predict), "-p", "Tell me a story"] if n_predict else ["-p", QUESTION]
    result = run_cli("chat", "--temp", "0", "--json", *asked)
    data = json.loads(result.stdout)
    assert data["stopped"] == ("length" if n_predict else "eos")
    llm = Llama(str(smollm2), n_ctx=64, verbose=False, vocab_only=True)
    tokens = len(llm.tokenize(data["reply"].encode(), add_bos=False, special=False))
    assert data["completion_tokens"] == tokens == (n_predict or tokens)


def readme_chat_prompt() -> str:
    """The prompt of the README's first command."""
    setup = (Path(__file__).resolve().parent.parent / "README.md").read_text().split("```bash\n")[1]
    return setup.split("yarn-cli chat ")[1].split(" -p '")[1].split("'")[0]


@pytest.fixture(scope="module")
def smollm2_x2(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("x2")
    return convert_file(smollm2, ConvertRequest(factor=2.0), output=folder / "x2.gguf").outputs[0].path


@pytest.mark.slow
@pytest.mark.parametrize(
    "arithmetic",
    [["-t", "1"], ["-t", "2", "-b", "16"], ["-t", "1", "-fa"], ["-t", "2", "-b", "16", "-fa"]],
    ids=lambda a: " ".join(a),
)
def test_the_readme_answer_holds_across_threads_batches_and_flash_attention(
    run_cli, smollm2_x2: Path, arithmetic: list[str]
) -> None:
    """Stand-ins for other CPUs: other summation orders must not change the README's first answer."""
    assert readme_chat_prompt() == QUESTION
    result = run_cli("chat", smollm2_x2, "--temp", "0", "-p", QUESTION, *arithmetic)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The capital of France is Paris.\n"


@pytest.mark.slow
def test_a_one_shot_reply_without_n_stops(run_cli, tiny_model: Path) -> None:
    """A random-weight model never says end-of-turn: without -n its reply still ends, and says why."""
    result = run_cli("chat", tiny_model, "-p", "the", "--temp", "0", "-c", "1024", "-t", "2")
    assert result.returncode == 0, result.stderr
    assert "(stopped at the one-shot limit of 512 tokens; -n N allows more" in result.stderr or (
        "kept repeating itself" in result.stderr
    )
    args = ("chat", tiny_model, "-p", "the", "--temp", "0", "-c", "1024", "--json")
    data = json.loads(run_cli(*args).stdout)
    # llama-cpp-python may finish a UTF-8 character begun at the limit: up to 3 more byte tokens
    assert data["stopped"] in ("length", "loop") and data["completion_tokens"] <= 512 + 3
    asked = json.loads(run_cli(*args, "-n", "600").stdout)
    assert asked["completion_tokens"] > 512  # -n is the user's own limit, and loops are theirs to keep


def test_a_file_without_a_chat_template_gets_plain_completion(run_cli, tiny_model: Path) -> None:
    """No template (a base model): the prompt is continued as it is, as llama.cpp's completion does."""
    result = run_cli("chat", tiny_model, "-p", "the", "--temp", "0", "-n", "12", "-c", "256", "-t", "1")
    assert result.returncode == 0, result.stderr
    assert "has no chat template" in result.stderr and "plain completion" in result.stderr
    data = json.loads(
        run_cli("chat", tiny_model, "-p", "the", "--temp", "0", "-n", "12", "-c", "256", "-t", "1", "--json").stdout
    )
    assert data["mode"] == "completion"
    llm, _ = load_model(open_model(tiny_model), LoadOptions(n_ctx=256, n_threads=1))
    try:
        expected = llm.create_completion("the", max_tokens=12, temperature=0.0)["choices"][0]["text"]  # type: ignore[index]
        assert data["reply"] == expected
        session = ChatSession(llm, Sampling(temp=0.0, max_tokens=4))
        session.conversation.turns += [
            {"role": "user", "content": "the"},
            {"role": "assistant", "content": " a and"},
            {"role": "user", "content": "of it"},
        ]
        tokens, _ = session.prompt_tokens(session.conversation.messages())
        assert tokens == llm.tokenize(b"the a and\nof it", add_bos=True)  # replies continue, inputs start a line
    finally:
        llm.close()


@pytest.mark.parametrize(
    ("text", "loops"),
    [
        ("L'Étoile, la Cité, la Nation, " + "la France, " * 8, True),
        ("L'Étoile, la Cité, la Nation, " + "la France, " * 7, False),  # not yet 8 times
        ("x" * 64, True),
        ("x" * 63, False),  # too short to call a loop
        ("ab" * 31, False),
        ("The capital of France is Paris.", False),
        ("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n", False),
        ("One sentence. " + "Another, a long one that says the same thing again and again. " * 8, True),
    ],
)
def test_loops_are_the_same_text_eight_times_at_the_end(text: str, loops: bool) -> None:
    assert ends_in_loop(text) is loops


@pytest.mark.slow
def test_seed_makes_sampling_reproducible(run_cli) -> None:
    args = ("chat", "-p", "Write one sentence about the sea.", "--temp", "1.0", "--seed", "42", "-n", "24")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0 and second.returncode == 0
    assert first.stdout == second.stdout and first.stdout.strip()


@pytest.mark.slow
def test_converted_file_answers_like_runtime_yarn(run_cli, smollm2: Path, tmp_path: Path) -> None:
    converted = convert_file(smollm2, ConvertRequest(factor=4.0), output=tmp_path / "smol.yarn-4x.gguf")
    path = converted.outputs[0].path
    from_file = run_cli("chat", path, "-p", QUESTION, "--temp", "0", "-c", "2048", "--json")
    at_runtime = run_cli(
        "chat", smollm2, "-p", QUESTION, "--temp", "0", "-c", "2048", "--json",
        "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "8192",
    )  # fmt: skip
    a, b = json.loads(from_file.stdout), json.loads(at_runtime.stdout)
    assert a["reply"] == b["reply"]
    assert a["settings"]["rope_scaling"] == b["settings"]["rope_scaling"] == "yarn"
    assert a["settings"]["rope_scale"] == b["settings"]["rope_scale"] == 4.0
    assert a["settings"]["yarn_orig_ctx"] == b["settings"]["yarn_orig_ctx"] == 8192
    assert (a["settings"]["n_ctx_train"], b["settings"]["n_ctx_train"]) == (32768, 8192)
    # trained on 8192 tokens either way: llama.cpp's n_ctx_train is the converted file's raised context_length
    assert a["settings"]["trained_context"] == b["settings"]["trained_context"] == 8192
    assert a["scale"] == b["scale"] == 4.0


@pytest.mark.slow
def test_yarn_auto_applies_yarn_beyond_the_native_context(run_cli) -> None:
    result = run_cli("chat", "-p", "Hi", "-n", "4", "-c", "16384", "--yarn", "auto", "--temp", "0")
    assert result.returncode == 0, result.stderr
    assert "--yarn auto: YaRN x2 (original context 8192) for -c 16384" in result.stderr
    assert "rope yarn x2 (original 8192)" in result.stderr
    assert "llama.cpp: n_ctx 16384 (trained 8192), rope yarn x2" in result.stderr  # not llama.cpp's raised 16384


@pytest.mark.slow
def test_rope_scaling_none_turns_a_file_scaling_off(run_cli, smollm2: Path, tmp_path: Path) -> None:
    path = convert_file(smollm2, ConvertRequest(factor=2.0), output=tmp_path / "x2.gguf").outputs[0].path
    result = run_cli("chat", path, "-p", "Hi", "-n", "2", "-c", "512", "--rope-scaling", "none", "--json")
    settings = json.loads(result.stdout)["settings"]
    assert (settings["rope_scaling"], settings["rope_scale"]) == ("none", 1.0)


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_prompt_longer_than_the_context(run_cli) -> None:
    result = run_cli("chat", "-p", "word " * 400, "-c", "256")
    assert result.returncode == 1
    line = error_line(result, status_lines=LLAMA_STATUS)
    assert "tokens but the context holds 256" in line
    assert "yarn-cli convert" in line and "--rope-scale" in line


@pytest.mark.slow
def test_old_turns_dropped_to_fit_system_prompt_kept(smollm2: Path) -> None:
    llm, effective = load_model(open_model(smollm2), LoadOptions(n_ctx=512))
    assert effective.n_ctx == 512
    session = ChatSession(llm, Sampling(temp=0, max_tokens=8), system="You are terse.")
    filler = "Please remember this sentence about nothing in particular. " * 12
    dropped = 0
    for i in range(4):
        _, stats = session.reply(f"{i}: {filler}")
        dropped += stats.dropped_turns
        assert stats.context_used <= 512
    assert dropped > 0
    assert session.conversation.system == "You are terse."
    assert session.conversation.turns[-2]["content"].startswith("3: ")
    with pytest.raises(ContextOverflowError, match="the context holds 512"):
        session.reply("x " * 600)
    llm.close()


def test_conversation_save_and_load(tmp_path: Path) -> None:
    conv = Conversation(system="sys", turns=[{"role": "user", "content": "é"}, {"role": "assistant", "content": "b"}])
    conv.save(tmp_path / "c.json")
    assert Conversation.load(tmp_path / "c.json") == conv
    (tmp_path / "bad.json").write_text('{"messages": [{"role": "wizard", "content": "x"}]}')
    with pytest.raises(InputError, match="role user or assistant"):
        Conversation.load(tmp_path / "bad.json")


def test_effective_settings_are_read_back(tiny_model: Path) -> None:
    scaling = ScalingOverride(rope_scaling="yarn", rope_scale=4.0, yarn_orig_ctx=256).to_runtime()
    llm, effective = load_model(open_model(tiny_model), LoadOptions(n_ctx=512, scaling=scaling, n_threads=1))
    assert effective.n_ctx == 512
    assert effective.freq_scale == 0.25 and effective.factor == 4.0
    assert effective.scaling_type == "yarn" and effective.original_context == 256
    assert effective.describe().startswith("n_ctx 512 (trained 256), rope yarn x4 (original 256), freq_base 10000")
    llm.close()


def test_a_converted_file_shows_its_trained_context_and_runs_at_its_scale(run_cli, tiny_model: Path) -> None:
    """On a YaRN x2 file llama.cpp's n_ctx_train is the raised context_length; trained is the model's 256."""
    x2 = convert_file(tiny_model, ConvertRequest(factor=2.0), output=tiny_model.with_name("x2.gguf")).outputs[0].path
    args = ("chat", x2, "-p", "the", "--temp", "0", "-n", "1", "-t", "1")
    shown = run_cli(*args)
    assert shown.returncode == 0, shown.stderr
    assert "llama.cpp: n_ctx 512 (trained 256), rope yarn x2 (original 256), freq_base 10000" in shown.stderr
    data = json.loads(run_cli(*args, "--json").stdout)
    settings = data["settings"]
    assert (settings["n_ctx_train"], settings["trained_context"], settings["yarn_orig_ctx"]) == (512, 256, 256)
    assert data["scale"] == settings["rope_scale"] == 2.0  # the factor the reply ran with, as the file says


@pytest.mark.slow
def test_the_scale_is_the_flags_factor_when_they_set_one(run_cli, tiny_model: Path) -> None:
    x2 = convert_file(tiny_model, ConvertRequest(factor=2.0), output=tiny_model.with_name("x2.gguf")).outputs[0].path
    args = ("chat", x2, "-p", "the", "--temp", "0", "-n", "1", "-t", "1", "--json")
    flagged = json.loads(run_cli(*args, "--rope-scaling", "linear", "--rope-scale", "3").stdout)
    assert (flagged["scale"], flagged["settings"]["rope_scaling"]) == (3.0, "linear")
    assert flagged["settings"]["trained_context"] == 256
    unscaled = json.loads(run_cli(*args, "--rope-scaling", "none").stdout)
    assert unscaled["scale"] == unscaled["settings"]["rope_scale"] == 1.0


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    sweep(
        [
            (["--rope-scale", "0"], "--rope-scale must be a positive number, got 0"),
            (["-c", "-5"], "-c/--ctx-size must be between 1 and 4,294,967,295 tokens, got -5"),
            (["--rope-scaling", "dynamic"], "--rope-scaling must be one of none, linear, yarn"),
            (["--temp", "-1"], "--temp must be 0 or more"),
            (["--top-p", "2"], "--top-p must be between 0 and 1"),
            (["-n", "0"], "-n/--max-tokens must be positive"),
            (["--yarn", "sometimes"], "--yarn must be auto, dynamic or off"),
            (["-t", "0"], "-t/--threads must be between 1 and 512 (llama.cpp's limit), got 0"),
            (["-t", "100000"], "-t/--threads must be between 1 and 512 (llama.cpp's limit), got 100000"),
            (["--rope-scale", "1e39"], "--rope-scale 1e+39 is more than a GGUF float32 can hold"),
            (["--rope-freq-base", "1e39"], "--rope-freq-base 1e+39 is more than a GGUF float32 can hold"),
            (["--temp", "nan"], "--temp must be 0 or more, got nan"),
            (["--repeat-penalty", "nan"], "--repeat-penalty must be positive, got nan"),
            (["-c", "4294967296"], "-c/--ctx-size must be between 1 and 4,294,967,295 tokens, got 4,294,967,296"),
            (["-c", "4000000000"], "the KV cache for 4000000000 tokens needs"),
        ],
        quick=2,
    ),
)
def test_bad_flags(run_cli, args: list[str], expected: str) -> None:
    result = run_cli("chat", "-p", "hi", *args)
    assert result.returncode == 1
    assert expected in error_line(result, status_lines=LLAMA_STATUS)


@pytest.mark.slow
def test_bad_models(run_cli, tmp_path: Path) -> None:
    missing = run_cli("chat", tmp_path / "nope.gguf", "-p", "hi")
    assert error_line(missing, status_lines=LLAMA_STATUS) == f"Error: {tmp_path / 'nope.gguf'} does not exist"
    (tmp_path / "notes.txt").write_text("just text, no model here\n" * 3)
    text = run_cli("chat", tmp_path / "notes.txt", "-p", "hi")
    assert "is not a GGUF file" in error_line(text, status_lines=LLAMA_STATUS)
    unloadable = write_tiny_llama(tmp_path / "extra.gguf", pad_mib=1)  # one tensor llama.cpp does not expect
    result = run_cli("chat", unloadable, "-p", "hi")
    assert result.returncode == 1
    assert (
        "llama.cpp could not load" in error_line(result, status_lines=LLAMA_STATUS)
        and "wrong number of tensors" in result.stderr
    )


# --- the REPL on a pseudo-terminal -------------------------------------------------------------


def test_repl_session(tmp_path: Path) -> None:
    term = Terminal("--temp", "0", "-c", "2048", cwd=tmp_path)
    term.expect("> ")
    term.type(QUESTION + "\r")
    assert "Paris" in term.expect("tok/s")
    term.expect("> ")
    term.type("/save conv.json\r")
    term.expect("Saved 2 messages")
    term.expect("> ")
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert saved["messages"][0]["content"] == QUESTION and "Paris" in saved["messages"][1]["content"]
    term.type("/regen\r")
    assert "Paris" in term.expect("tok/s")
    term.expect("> ")
    term.type("/clear\r")
    term.expect("Conversation cleared.")
    term.expect("> ")
    term.type("/stats\r")
    assert "0 messages" in term.expect("> ")
    term.type("/load conv.json\r")
    term.expect("Loaded 2 messages")
    term.expect("> ")
    term.type("/stats\r")
    assert "2 messages" in term.expect("> ")
    term.type("/nonsense\r")
    assert "unknown command /nonsense" in term.expect("> ")
    term.type("/save missing/conv.json\r")
    assert "Error:\x1b[0m cannot save the conversation to missing/conv.json" in term.expect("> ")
    term.type("/load .\r")
    assert "Error:\x1b[0m cannot read .: Is a directory" in term.expect("> ")
    term.type("/stats\r")
    assert "2 messages" in term.expect("> ")  # the session goes on as it was
    term.type("/exit\r")
    assert term.wait() == 0


@pytest.mark.slow
def test_repl_ctrl_c_stops_a_reply_and_keeps_the_session(tmp_path: Path) -> None:
    term = Terminal("--temp", "0", "-c", "2048", cwd=tmp_path)
    term.expect("> ")
    term.type("Tell me a very long story about a dragon.\r")
    term.expect("dragon.\r\n")  # the echo of the line
    time.sleep(3)
    term.type("\x03")  # Ctrl-C
    term.expect("(stopped)")
    term.expect("> ")
    term.type("Say hello.\r")
    term.expect("tok/s", timeout=300)  # SmolLM2 sometimes answers at length; a busy 2-core machine is slow
    term.expect("> ")
    term.type("\x04")  # Ctrl-D leaves
    assert term.wait() == 0


@pytest.mark.parametrize(
    ("line", "backend"),
    [
        ("load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n", "CPU"),
        ("load_tensors:        CUDA0 model buffer size =  1024.00 MiB\n", "CUDA"),
        ("load_tensors: MTL0_Mapped model buffer size =   512.00 MiB\n", "Metal"),
        ("load_tensors:      Vulkan0 model buffer size =   256.00 MiB\n", "Vulkan"),
    ],
)
def test_backend_named_from_llama_cpp_buffer_lines(line: str, backend: str) -> None:
    """The device names llama.cpp gives its model buffers (the CPU line is this machine's own log)."""
    from yarn_cli.llama.loader import _backend

    assert _backend(["load_tensors: loading model tensors\n", line]) == backend


def test_no_prompt_and_no_terminal(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "yarn_cli", "chat"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert error_line(result) == "Error: no prompt: stdin was empty (give -p TEXT, or run on a terminal to chat)"
