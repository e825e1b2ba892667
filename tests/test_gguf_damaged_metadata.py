"""Metadata values a damaged header can hold: one line naming the key and the value, nothing written.

A value its key's meaning rules out (text where a number belongs, a negative or NaN context, a
boolean count) stops every command at once, ``inspect`` included: there is nothing right to show.
The tokenizer's keys and the quantization stop ``inspect``, the one command that reads them.
A number that reads fine but is out of range (a NaN base, an infinite factor) is shown by
``inspect``, as valid JSON too, and refused by whatever would compute from it or write it back:
``convert`` with every method. Real files and the real command line throughout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gguf import GGUFValueType
from ggufs import write_tiny_llama
from helpers import error_line, sha256, sweep

from yarn_cli.cli.render import print_json
from yarn_cli.errors import UnsupportedModelError
from yarn_cli.model import open_model
from yarn_cli.rope.keys import RECORD_KEY
from yarn_cli.rope.scaling import Method

S, F32, U32, I32, BOOL = (
    GGUFValueType.STRING,
    GGUFValueType.FLOAT32,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.BOOL,
)
DAMAGED = "(the header may be damaged: download the file again, or re-create it with llama.cpp's convert script)"
COUNT = f"it must be a whole number, 0 or more {DAMAGED}"
NUMBER = f"it must be a number {DAMAGED}"


def strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# key, stored value and type, what the line says after "<file>: "
UNREADABLE = [
    ("llama.rope.freq_base", ("x", S), f"llama.rope.freq_base is 'x'; {NUMBER}"),
    ("llama.context_length", ("x", S), f"llama.context_length is 'x'; {COUNT}"),
    ("llama.block_count", ("x", S), f"llama.block_count is 'x'; {COUNT}"),
    ("llama.attention.head_count", ("x", S), f"llama.attention.head_count is 'x'; {COUNT}"),
    ("llama.attention.head_count_kv", ("x", S), f"llama.attention.head_count_kv is 'x'; {COUNT}"),
    ("llama.attention.key_length", ("x", S), f"llama.attention.key_length is 'x'; {COUNT}"),
    ("llama.rope.dimension_count", ("x", S), f"llama.rope.dimension_count is 'x'; {COUNT}"),
    ("llama.rope.scaling.factor", ("x", S), f"llama.rope.scaling.factor is 'x'; {NUMBER}"),
    ("llama.rope.scaling.attn_factor", ("x", S), f"llama.rope.scaling.attn_factor is 'x'; {NUMBER}"),
    (
        "llama.rope.scaling.original_context_length",
        ("x", S),
        f"llama.rope.scaling.original_context_length is 'x'; {COUNT}",
    ),
    ("llama.rope.scale_linear", ("x", S), f"llama.rope.scale_linear is 'x'; {NUMBER}"),
    ("split.count", ("x", S), f"split.count is 'x'; {COUNT}"),
    ("llama.context_length", (math.nan, F32), f"llama.context_length is nan; {COUNT}"),
    ("llama.context_length", (256.5, F32), f"llama.context_length is 256.5; {COUNT}"),
    ("llama.embedding_length", (math.nan, F32), f"llama.embedding_length is nan; {COUNT}"),
    ("llama.embedding_length", (math.inf, F32), f"llama.embedding_length is inf; {COUNT}"),
    ("llama.context_length", (-5, I32), f"llama.context_length is -5; {COUNT}"),
    ("llama.context_length", (True, BOOL), f"llama.context_length is true (a boolean); {COUNT}"),
    ("llama.rope.scaling.type", (2, U32), f"llama.rope.scaling.type is 2; it must be text {DAMAGED}"),
    (
        "llama.context_length",
        ([256, 512], GGUFValueType.ARRAY),
        f"llama.context_length is a list of 2 values; it must be a single value {DAMAGED}",
    ),
]


@pytest.mark.parametrize(
    ("key", "stored", "message"), sweep(UNREADABLE), ids=[f"{k}={v[0]!r}:{v[1].name}" for k, v, _ in UNREADABLE]
)
def test_a_value_its_key_rules_out_is_one_line_in_every_command(
    run_cli, tmp_path: Path, key: str, stored: tuple[object, GGUFValueType], message: str
) -> None:
    model = write_tiny_llama(tmp_path / "damaged.gguf", extra={key: stored})
    before = sha256(model)
    for args in (
        ["inspect", model, "--json"],
        ["inspect", model, "--factor", "4"],
        ["convert", model, tmp_path / "out.gguf", "--factor", "2"],
    ):
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert error_line(result) == f"Error: {model}: {message}", args
        assert result.stdout == ""
    assert sha256(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.gguf"]


# The tokenizer's keys and general.file_type: inspect shows them, so it refuses them; convert never reads them
TEXT = f"it must be text {DAMAGED}"
TOKENIZER_UNREADABLE = [
    ("tokenizer.ggml.bos_token_id", ("x", S), f"tokenizer.ggml.bos_token_id is 'x'; {COUNT}"),
    ("tokenizer.ggml.eos_token_id", (-1, I32), f"tokenizer.ggml.eos_token_id is -1; {COUNT}"),
    ("tokenizer.ggml.model", (2, U32), f"tokenizer.ggml.model is 2; {TEXT}"),
    ("tokenizer.chat_template", (True, BOOL), f"tokenizer.chat_template is true (a boolean); {TEXT}"),
    (
        "tokenizer.ggml.add_bos_token",
        (1, U32),
        f"tokenizer.ggml.add_bos_token is 1; it must be true or false {DAMAGED}",
    ),
    (
        "tokenizer.ggml.tokens",
        ("x", S),
        f"tokenizer.ggml.tokens is 'x'; it must be a list of text (the tokens) {DAMAGED}",
    ),
    ("general.file_type", ("q4", S), f"general.file_type is 'q4'; {COUNT}"),
]


@pytest.mark.parametrize(
    ("key", "stored", "message"),
    sweep(TOKENIZER_UNREADABLE),
    ids=[f"{k}={v[0]!r}:{v[1].name}" for k, v, _ in TOKENIZER_UNREADABLE],
)
def test_a_damaged_tokenizer_key_is_one_line_in_inspect(
    run_cli, tmp_path: Path, key: str, stored: tuple[object, GGUFValueType], message: str
) -> None:
    model = write_tiny_llama(tmp_path / "damaged.gguf", extra={key: stored})
    for args in (["inspect", model], ["inspect", model, "--json"]):
        result = run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert error_line(result) == f"Error: {model}: {message}", args
        assert result.stdout == ""
    assert run_cli("convert", model, "--factor", "2", "--dry-run").returncode == 0


def test_a_damaged_undo_record_is_one_line(run_cli, tmp_path: Path) -> None:
    record = json.dumps({"llama.context_length": {"type": "STRING", "value": "x", "index": 2}})
    model = write_tiny_llama(tmp_path / "converted.gguf", extra={RECORD_KEY: (record, S)})
    result = run_cli("convert", model, "--method", "none")
    assert result.returncode == 1
    assert error_line(result) == (
        f"Error: {model}: the {RECORD_KEY} key is damaged (it records llama.context_length as 'x'); "
        "yarn-cli cannot tell what the file had before it was converted"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.gguf"]


# Numbers that read fine but that nothing can be computed from: inspect shows them, convert refuses.
BASE_RULE = f"a RoPE base must be a number above 1 {DAMAGED}"
OUT_OF_RANGE = {
    "freq_base nan": ({"llama.rope.freq_base": (math.nan, F32)}, f"llama.rope.freq_base is nan; {BASE_RULE}"),
    "freq_base 0": ({"llama.rope.freq_base": (0.0, F32)}, f"llama.rope.freq_base is 0; {BASE_RULE}"),
    "freq_base -1": ({"llama.rope.freq_base": (-1.0, F32)}, f"llama.rope.freq_base is -1; {BASE_RULE}"),
    "yarn factor inf": (
        {"llama.rope.scaling.type": ("yarn", S), "llama.rope.scaling.factor": (math.inf, F32)},
        f"llama.rope.scaling.factor is inf; a scaling factor must be a finite number, 0 or more {DAMAGED}",
    ),
    "attn_factor nan": (
        {"llama.rope.scaling.attn_factor": (math.nan, F32)},
        f"llama.rope.scaling.attn_factor is nan; an attention factor must be a finite number above 0 {DAMAGED}",
    ),
}
METHODS = [["--factor", "2"], ["--factor", "2", "-m", "linear"], ["--factor", "2", "-m", "ntk"], ["-m", "none"]]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_convert_refuses_a_damaged_number_with_every_method(run_cli, tmp_path: Path, case: str) -> None:
    extra, message = OUT_OF_RANGE[case]
    model = write_tiny_llama(tmp_path / "damaged.gguf", extra=extra)
    before = sha256(model)
    for method in METHODS:
        for args in (["convert", model, tmp_path / "out.gguf", *method], ["convert", model, *method, "--in-place"]):
            result = run_cli(*args)
            assert result.returncode == 1, (args, result.stderr)
            assert error_line(result) == f"Error: {message}", args
    assert sha256(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.gguf"]


@pytest.mark.parametrize(
    ("extra", "where", "shown"),
    sweep(
        [
            ({"llama.rope.freq_base": (math.nan, F32)}, ("rope", "freq_base"), "nan"),
            (
                {"llama.rope.scaling.type": ("yarn", S), "llama.rope.scaling.factor": (math.inf, F32)},
                ("scaling", "factor"),
                "inf",
            ),
            ({"llama.rope.freq_base": (-math.inf, F32)}, ("rope", "freq_base"), "-inf"),
        ]
    ),
)
def test_inspect_shows_a_damaged_number_and_its_json_stays_json(
    run_cli, tmp_path: Path, extra: dict[str, tuple[object, GGUFValueType]], where: tuple[str, str], shown: str
) -> None:
    model = write_tiny_llama(tmp_path / "damaged.gguf", extra=extra)
    table = run_cli("inspect", model)
    assert table.returncode == 0, table.stderr
    assert shown in table.stdout
    result = run_cli("inspect", model, "--json")
    assert result.returncode == 0, result.stderr
    data = strict_json(result.stdout)  # no bare NaN or Infinity
    assert isinstance(data, dict)
    section, key = where
    assert data[section][key] == shown


def test_a_scaling_at_load_time_is_refused_too(tmp_path: Path) -> None:
    """chat --yarn and the passkey and perplexity variants load with the keys a conversion would write."""
    model = write_tiny_llama(tmp_path / "damaged.gguf", extra={"llama.rope.freq_base": (math.nan, F32)})
    rope = open_model(model).rope
    for method in (Method.YARN, Method.LINEAR, Method.NTK, Method.NONE):
        with pytest.raises(UnsupportedModelError, match=r"^llama\.rope\.freq_base is nan; a RoPE base must be"):
            rope.runtime(method, 2.0)
    assert rope.as_it_came().kv_overrides == ()  # the file as it is: nothing computed from it


def test_every_json_the_commands_print_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    """inspect --json and convert --json print through one function: no NaN or Infinity gets out bare."""
    print_json({"base": math.nan, "factors": [math.inf, -math.inf, 2.5], "nested": {"x": (math.nan, 1)}, "n": 3})
    assert strict_json(capsys.readouterr().out) == {
        "base": "nan",
        "factors": ["inf", "-inf", 2.5],
        "nested": {"x": ["nan", 1]},
        "n": 3,
    }
