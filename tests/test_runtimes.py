"""Where a file's scaling takes effect, per runtime and architecture: the library's table (as read in
Ollama's, LM Studio's and llama.cpp's source), ``inspect``'s section and JSON, ``convert``'s warnings.

Ollama and LM Studio cannot run here: these tests check that yarn-cli says what their source shows,
on real files (tiny models of several architectures, converted by yarn-cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from archs import write_tiny
from ggufs import write_tiny_llama

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.model import open_model
from yarn_cli.rope.architectures import NO_ROPE_ARCHS
from yarn_cli.rope.runtimes import (
    LLAMA_CPP,
    LM_STUDIO,
    OLD_OLLAMA,
    OLLAMA,
    OLLAMA_ENGINE,
    OLLAMA_ENGINE_REQUIRED,
    RUNTIMES,
    VLLM,
    Where,
    not_taking_effect,
    runtime_report,
    scaling_method,
    where_scaling_applies,
)
from yarn_cli.rope.scaling import Method

SCALINGS = (Method.YARN, Method.LINEAR, Method.NTK)


def by_runtime(architecture: str, method: Method, **kwargs: bool) -> dict[str, Where]:
    wheres = where_scaling_applies(architecture, method, **kwargs)
    assert [w.runtime for w in wheres] == list(RUNTIMES)
    return {w.runtime: w for w in wheres}


def old_ollama(architecture: str, method: Method, **kwargs: bool) -> Where:
    return by_runtime(architecture, method, **kwargs)[OLD_OLLAMA]


# --- the library's table ----------------------------------------------------------------------


@pytest.mark.parametrize("method", SCALINGS)
@pytest.mark.parametrize("architecture", ["llama", "gemma3", "qwen3", "gpt-oss", "phi3", "deepseek2", "qwen3vl"])
def test_llama_cpp_and_ollama_from_0_30_run_every_scaling_vllm_none(architecture: str, method: Method) -> None:
    where = by_runtime(architecture, method)
    assert where[LLAMA_CPP].applies is True and "every architecture" in where[LLAMA_CPP].sentence
    assert where[OLLAMA].applies is True and "llama-server" in where[OLLAMA].sentence
    assert where[LM_STUDIO].applies is True and "Auto" in where[LM_STUDIO].sentence
    assert where[VLLM].applies is False and "--hf-overrides" in where[VLLM].sentence
    assert all(w.source for w in where.values())


def test_no_scaling_asks_nothing() -> None:
    assert where_scaling_applies("gemma3", Method.NONE) == []


def test_ollama_before_0_30_ran_gemma3_on_its_own_engine_which_applies_yarn_otherwise() -> None:
    yarn = old_ollama("gemma3", Method.YARN)
    assert yarn.applies is None
    assert yarn.sentence.startswith("runs gemma3 on its own engine")
    assert "beta_fast 64" in yarn.sentence and "attention factor" in yarn.sentence
    assert "Ollama 0.30 and later run it in llama-server" in yarn.sentence  # what works instead
    assert "model/models/gemma3/model_text.go" in yarn.source and "v0.24.0" in yarn.source
    # earlier versions ignored the linear and NTK keys too
    assert old_ollama("gemma3", Method.LINEAR).applies is None
    assert "rope.global.freq_base" in old_ollama("gemma3", Method.NTK).sentence


def test_ollama_before_0_30_ran_llama_on_its_llama_cpp_runner() -> None:
    for method in SCALINGS:
        where = old_ollama("llama", method)
        assert where.applies is True
        assert where.sentence.startswith("runs llama with its llama.cpp runner")
        assert "OLLAMA_NEW_ENGINE=1" in where.sentence
    # with OLLAMA_NEW_ENGINE=1 the engine would run YaRN as linear scaling: said, not warned about
    assert "linear scaling, never as YaRN" in old_ollama("llama", Method.YARN).sentence


def test_an_architecture_the_engine_lacks_runs_on_llama_cpp() -> None:
    where = old_ollama("phi3", Method.YARN)
    assert where.applies is True and "llama.cpp runner" in where.sentence
    assert "OLLAMA_NEW_ENGINE" not in where.sentence


@pytest.mark.parametrize(
    ("architecture", "yarn", "linear", "ntk"),
    [
        ("qwen3", None, True, True),  # YaRN without its attention factor
        ("qwen3moe", None, True, True),
        ("lfm2", None, True, True),
        ("llama4", None, True, True),  # rope.scaling.factor as linear
        ("mllama", None, True, True),
        ("gemma4", False, False, True),  # RoPE scale fixed at 1
        ("glmocr", False, False, True),
        ("gpt-oss", True, None, True),  # always YaRN
        ("deepseek2", True, None, True),
        ("olmo3", True, True, True),
        ("qwen3vl", None, None, True),  # the factor's square root
        ("gemma3n", None, None, True),  # every layer, the sliding-window ones too
        ("nemotron_h", False, False, False),  # no RoPE
    ],
)
def test_what_ollamas_engine_does_per_architecture(
    architecture: str, yarn: bool | None, linear: bool | None, ntk: bool | None
) -> None:
    assert architecture in OLLAMA_ENGINE_REQUIRED
    found = [old_ollama(architecture, method).applies for method in SCALINGS]
    assert found == [yarn, linear, ntk]
    for method, applies in zip(SCALINGS, found, strict=True):
        where = old_ollama(architecture, method)
        assert where.sentence.startswith(f"runs {architecture} on its own engine, which ")
        assert ("Ollama 0.30 and later" in where.sentence) == (applies is not True)


def test_the_engine_table_covers_every_architecture_it_was_required_for() -> None:
    required_with_rope = {a for a in OLLAMA_ENGINE_REQUIRED if a not in NO_ROPE_ARCHS}
    assert required_with_rope <= set(OLLAMA_ENGINE)
    assert {"llama", "qwen2", "gemma2"} <= set(OLLAMA_ENGINE) - OLLAMA_ENGINE_REQUIRED  # OLLAMA_NEW_ENGINE only


def test_a_suggestion_of_linear_only_where_the_engine_applies_it() -> None:
    assert "--method linear" in old_ollama("qwen3", Method.YARN).sentence
    assert "--method linear" not in old_ollama("gemma4", Method.YARN).sentence  # ignores linear too


def test_an_attention_factor_the_engine_ignores() -> None:
    assert old_ollama("gpt-oss", Method.YARN).applies is True
    with_attn = old_ollama("gpt-oss", Method.YARN, attn_factor=True)
    assert with_attn.applies is None and "ignores rope.scaling.attn_factor" in with_attn.sentence
    assert by_runtime("gpt-oss", Method.YARN, attn_factor=True)[LLAMA_CPP].applies is True


def test_llama_cpp_says_what_its_sliding_window_layers_get() -> None:
    assert "global-attention layers only" in by_runtime("gemma3", Method.YARN)[LLAMA_CPP].sentence
    assert "sliding-window layers are scaled too" in by_runtime("gemma2", Method.LINEAR)[LLAMA_CPP].sentence
    assert "unlikely to help" in by_runtime("cohere2", Method.YARN)[LLAMA_CPP].sentence
    assert by_runtime("llama", Method.YARN)[LLAMA_CPP].sentence.endswith("llama-cpp-python)")


def test_warnings_name_the_runtimes_that_run_the_file_but_not_its_scaling() -> None:
    assert not_taking_effect(where_scaling_applies("llama", Method.YARN)) == []  # vLLM runs no GGUF: no news
    lines = not_taking_effect(where_scaling_applies("gemma3", Method.YARN))
    assert len(lines) == 1 and lines[0].startswith("Ollama < 0.30: runs gemma3 on its own engine")


# --- what a file amounts to -------------------------------------------------------------------


def test_the_report_follows_the_files_scaling(tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "q.gguf", "qwen3")
    unscaled = runtime_report(open_model(model).rope)
    assert unscaled is not None and unscaled.method == Method.YARN and not unscaled.from_file
    assert unscaled.to_dict()["of"] == "convert --method yarn"
    for method, applies in ((Method.YARN, None), (Method.LINEAR, True), (Method.NTK, True)):
        out = tmp_path / f"q.{method.value}.gguf"
        convert_file(model, ConvertRequest(method=method, factor=2.0), output=out)
        rope = open_model(out).rope
        assert scaling_method(rope) == method
        report = runtime_report(rope)
        assert report is not None and report.from_file and report.method == method
        assert {w.runtime: w.applies for w in report.where}[OLD_OLLAMA] is applies


def test_a_model_without_rope_gets_no_report(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "b.gguf", arch="bloom")
    assert runtime_report(open_model(model).rope) is None


# --- the commands -----------------------------------------------------------------------------


def test_convert_modelfile_of_gemma3_warns_once_about_ollamas_engine(run_cli, tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "g.gguf", "gemma3")
    result = run_cli("convert", model, "--factor", "2", "--modelfile")
    assert result.returncode == 0, result.stderr
    ollama = [line for line in result.stderr.splitlines() if "Ollama < 0.30" in line]
    assert len(ollama) == 1
    assert ollama[0].startswith("Warning: Ollama < 0.30: runs gemma3 on its own engine, which ")
    assert ollama[0].endswith("Ollama 0.30 and later run it in llama-server, as converted")
    assert "PARAMETER num_ctx 512" in (tmp_path / "g.yarn-2x.Modelfile").read_text()  # written all the same


def test_convert_modelfile_of_llama_warns_about_no_runtime(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--factor", "2", "--modelfile")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Ollama: " in result.stderr


def test_the_modelfile_of_a_converted_file_as_it_is_carries_the_same_warning(run_cli, tmp_path: Path) -> None:
    gemma = write_tiny(tmp_path / "g.gguf", "gemma3")
    assert run_cli("convert", gemma, "--factor", "2").returncode == 0
    alone = run_cli("convert", tmp_path / "g.yarn-2x.gguf", "--modelfile")
    assert alone.returncode == 0, alone.stderr
    assert [line for line in alone.stderr.splitlines() if line.startswith("Warning: Ollama < 0.30: ")]
    data = json.loads(run_cli("convert", tmp_path / "g.yarn-2x.gguf", "--modelfile", "--force", "--json").stdout)
    assert {r["runtime"]: r["applies"] for r in data["runtimes"]}["Ollama < 0.30"] is not True
    llama = write_tiny(tmp_path / "l.gguf", "llama")
    assert run_cli("convert", llama, "--factor", "2").returncode == 0
    quiet = run_cli("convert", tmp_path / "l.yarn-2x.gguf", "--modelfile")
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr


def test_convert_json_lists_every_runtime(run_cli, tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "g.gguf", "gemma3")
    result = run_cli("convert", model, "--factor", "2", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    runtimes = json.loads(result.stdout)["runtimes"]
    assert [r["runtime"] for r in runtimes] == list(RUNTIMES)
    assert {r["runtime"]: r["applies"] for r in runtimes} == {
        LLAMA_CPP: True, LM_STUDIO: True, OLLAMA: True, OLD_OLLAMA: None, VLLM: False,
    }  # fmt: skip
    assert all(set(r) == {"runtime", "applies", "sentence", "source"} for r in runtimes)
    assert result.stderr == ""  # with --json, as the other warnings, only in the JSON


def test_inspect_shows_where_a_conversion_would_take_effect(run_cli, tmp_path: Path) -> None:
    model = write_tiny(tmp_path / "g.gguf", "gemma3")
    text = run_cli("inspect", model).stdout
    assert "Runtimes        a YaRN conversion takes effect in llama.cpp, LM Studio, Ollama 0.30+" in text
    assert "differently in Ollama < 0.30: runs gemma3 on its own engine" in text
    assert "not in vLLM, which reads no GGUF" in text

    data = json.loads(run_cli("inspect", model, "--json").stdout)["runtimes"]
    assert data["method"] == "yarn" and data["of"] == "convert --method yarn"
    assert {w["runtime"]: w["applies"] for w in data["where"]}[OLD_OLLAMA] is None


def test_inspect_of_a_converted_file_shows_its_own_scaling(run_cli, tiny_model: Path) -> None:
    out = tiny_model.with_name("tiny.linear-2x.gguf")
    assert run_cli("convert", tiny_model, out, "--method", "linear", "--factor", "2").returncode == 0
    text = run_cli("inspect", out).stdout
    assert "the file's linear takes effect in llama.cpp, LM Studio, Ollama 0.30+, Ollama < 0.30" in text
    assert "not in vLLM, which reads no GGUF: its flags are below" in text
    data = json.loads(run_cli("inspect", out, "--json").stdout)["runtimes"]
    assert data["method"] == "linear" and data["of"] == "file"
    assert [w["applies"] for w in data["where"]] == [True, True, True, True, False]
