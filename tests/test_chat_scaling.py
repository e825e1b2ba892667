"""``chat_scaling.choose_scaling``: what a local chat loads a model with, from its flags, ``--yarn`` and ``-c``.

On tiny models written by ``tests/ggufs.py`` and ``tests/archs.py`` (a 256-token llama, and gemma2,
whose sliding-window layers llama.cpp's run-time flags do not reach), opened as the chat command
opens them; the ``--yarn auto`` choice is loaded in the real llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from archs import write_tiny
from helpers import error_line

from yarn_cli.chat_scaling import YARN_MODES, ChatScaling, YarnMode, choose_scaling
from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.errors import InputError
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.model import open_model
from yarn_cli.rope.architectures import flags_match_file
from yarn_cli.rope.scaling import Method, ScalingOverride

YARN_X4 = ScalingOverride(rope_scaling="yarn", rope_scale=4.0, yarn_orig_ctx=256)
GEMMA2_NOTE = (
    "gemma2: llama.cpp applies --rope-scaling/--rope-scale to the global layers only; the sliding-window layers "
    "keep the file's scaling (a file converted by yarn-cli scales them all)"
)


@pytest.fixture
def gemma2(tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "gemma2.gguf", "gemma2")


@pytest.mark.parametrize("yarn", YARN_MODES)
def test_no_flags_and_no_larger_context_is_the_file_as_it_is(tiny_model: Path, yarn: YarnMode) -> None:
    model = open_model(tiny_model)
    for n_ctx in (None, 128, 256):
        assert choose_scaling(model, ScalingOverride(), yarn=yarn, n_ctx=n_ctx) == ChatScaling(None)


def test_flags_are_llama_cpps_and_win_over_yarn_auto(tiny_model: Path) -> None:
    model = open_model(tiny_model)
    modes: tuple[YarnMode, ...] = ("off", "auto")
    for yarn in modes:
        chosen = choose_scaling(model, YARN_X4, yarn=yarn, n_ctx=4096)
        assert chosen == ChatScaling(YARN_X4.to_runtime())  # no note: llama's flags reach every layer


def test_flags_on_a_sliding_window_architecture_say_what_they_miss(gemma2: Path) -> None:
    model = open_model(gemma2)
    assert not flags_match_file(model.architecture)
    chosen = choose_scaling(model, YARN_X4, yarn="off", n_ctx=None)
    assert chosen == ChatScaling(YARN_X4.to_runtime(), GEMMA2_NOTE)
    # flags that do not interpolate positions leave every layer alone: nothing to say
    for unscaled in (ScalingOverride(rope_scaling="none"), ScalingOverride(rope_freq_base=20000.0)):
        assert choose_scaling(model, unscaled, yarn="off", n_ctx=None) == ChatScaling(unscaled.to_runtime())
    # --yarn auto loads the file's keys (--override-kv), which reach the sliding-window layers too
    auto = choose_scaling(model, ScalingOverride(), yarn="auto", n_ctx=512)
    assert auto.note == "--yarn auto: YaRN x2 (original context 256) for -c 512"


def test_yarn_auto_stretches_an_unscaled_model_to_the_context_asked(tiny_model: Path) -> None:
    model = open_model(tiny_model)
    chosen = choose_scaling(model, ScalingOverride(), yarn="auto", n_ctx=1024)
    assert chosen == ChatScaling(
        model.rope.runtime(Method.YARN, 4.0), "--yarn auto: YaRN x4 (original context 256) for -c 1024"
    )
    llm, effective = load_model(model, LoadOptions(n_ctx=1024, scaling=chosen.scaling, n_threads=1))
    llm.close()
    assert (effective.scaling_type, effective.factor, effective.original_context) == ("yarn", 4.0, 256)
    assert effective.n_ctx == effective.n_ctx_train == 1024


def test_yarn_auto_leaves_a_scaled_file_alone(tiny_model: Path, tmp_path: Path) -> None:
    converted = convert_file(tiny_model, ConvertRequest(factor=2.0), output=tmp_path / "x2.gguf").outputs[0].path
    assert choose_scaling(open_model(converted), ScalingOverride(), yarn="auto", n_ctx=4096) == ChatScaling(None)


def test_yarn_dynamic_refuses_the_flags(tiny_model: Path) -> None:
    model = open_model(tiny_model)
    refused = "--yarn dynamic chooses the scaling itself; drop --rope-scaling/--rope-scale/--rope-freq-base"
    for flags in (YARN_X4, ScalingOverride(rope_scaling="none"), ScalingOverride(rope_freq_base=20000.0)):
        with pytest.raises(InputError) as caught:
            choose_scaling(model, flags, yarn="dynamic", n_ctx=1024)
        assert str(caught.value) == refused


def test_bad_flags_are_the_flags_own_error(tiny_model: Path) -> None:
    model = open_model(tiny_model)
    with pytest.raises(InputError, match="--rope-scale must be a positive number, got 0"):
        choose_scaling(model, ScalingOverride(rope_scale=0.0), yarn="dynamic", n_ctx=None)


@pytest.mark.slow
def test_the_chat_command_shows_the_note(run_cli, gemma2: Path) -> None:
    args = ("chat", gemma2, "-p", "the", "-n", "1", "-t", "1", "--temp", "0", "-c", "512")
    flagged = run_cli(*args, "--rope-scaling", "yarn", "--rope-scale", "2", "--yarn-orig-ctx", "256")
    assert flagged.returncode == 0, flagged.stderr
    assert GEMMA2_NOTE in flagged.stderr.replace("\n", " ")
    auto = run_cli(*args, "--yarn", "auto")
    assert auto.returncode == 0, auto.stderr
    assert "--yarn auto: YaRN x2 (original context 256) for -c 512" in auto.stderr
    assert "global layers only" not in auto.stderr
    refused = run_cli(*args, "--yarn", "dynamic", "--rope-freq-base", "20000")
    assert refused.returncode == 1
    assert error_line(refused) == (
        "Error: --yarn dynamic chooses the scaling itself; drop --rope-scaling/--rope-scale/--rope-freq-base"
    )
