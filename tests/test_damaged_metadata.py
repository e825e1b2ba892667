"""Metadata values a damaged header can hold: one line naming the key and the value, nothing written.

A value its key's meaning rules out (text where a number belongs, a negative or NaN context, a
boolean count) stops every command at once, ``inspect`` included: there is nothing right to show.
Real files and the real command line throughout.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from gguf import GGUFValueType
from ggufs import write_tiny_llama
from helpers import error_line

from yarn_cli.rope.keys import RECORD_KEY

S, F32, U32, I32, BOOL = (
    GGUFValueType.STRING,
    GGUFValueType.FLOAT32,
    GGUFValueType.UINT32,
    GGUFValueType.INT32,
    GGUFValueType.BOOL,
)
DAMAGED = "(the header may be damaged)"
COUNT = f"it must be a whole number, 0 or more {DAMAGED}"
NUMBER = f"it must be a number {DAMAGED}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    ("key", "stored", "message"), UNREADABLE, ids=[f"{k}={v[0]!r}:{v[1].name}" for k, v, _ in UNREADABLE]
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
