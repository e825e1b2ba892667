"""Split models: the first split's metadata changes, the others are linked, llama.cpp loads the result."""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp
import pytest
from ggufs import CONTEXT, write_tiny_llama
from helpers import interrupt_on_call, sha256, snapshot

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.errors import InputError, OutputError
from yarn_cli.gguf.header import read_header
from yarn_cli.rope.scaling import Method


@pytest.fixture
def split_model(tmp_path: Path) -> Path:
    first = write_tiny_llama(tmp_path / "tiny.gguf", split_max_tensors=8)
    assert first.name == "tiny-00001-of-00003.gguf"
    return first


def n_ctx_train(path: Path) -> int:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
    try:
        return llama_cpp.llama_model_n_ctx_train(llm.model)
    finally:
        llm.close()


def test_split_model_converts_and_loads(split_model: Path) -> None:
    folder = split_model.parent
    result = convert_file(split_model, ConvertRequest(factor=4.0))
    names = [w.path.name for w in result.outputs]
    assert names == [f"tiny.yarn-4x-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [w.action for w in result.outputs] == ["copy", "hardlink", "hardlink"]
    for i in (2, 3):
        src = folder / f"tiny-0000{i}-of-00003.gguf"
        dst = folder / f"tiny.yarn-4x-0000{i}-of-00003.gguf"
        assert dst.stat().st_ino == src.stat().st_ino
    header = read_header(result.outputs[0].path)
    assert header.get("llama.context_length") == 4 * CONTEXT
    assert header.get("split.count") == 3
    assert n_ctx_train(result.outputs[0].path) == 4 * CONTEXT
    assert n_ctx_train(split_model) == CONTEXT


def test_split_output_named_by_user(split_model: Path, tmp_path: Path) -> None:
    result = convert_file(split_model, ConvertRequest(factor=2.0), output=tmp_path / "long.gguf")
    assert [w.path.name for w in result.outputs] == [f"long-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    undone = convert_file(result.outputs[0].path, ConvertRequest(method=Method.NONE))
    assert undone.outputs[0].path.name == "long.orig-00001-of-00003.gguf"
    assert sha256(undone.outputs[0].path) == sha256(split_model)


def test_split_copied_when_links_are_impossible(split_model: Path, tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test folder")
    out = other / f"yarn-cli-test-{tmp_path.name}.gguf"
    try:
        result = convert_file(split_model, ConvertRequest(factor=2.0), output=out)
        assert [w.action for w in result.outputs] == ["copy", "copy", "copy"]
        for i in (2, 3):
            assert sha256(result.outputs[i - 1].path) == sha256(split_model.with_name(f"tiny-0000{i}-of-00003.gguf"))
    finally:
        for p in other.glob(f"yarn-cli-test-{tmp_path.name}*"):
            p.unlink()


def test_later_split_as_input_is_refused(split_model: Path) -> None:
    with pytest.raises(InputError, match=r"is split 2 of 3.*pass the first split"):
        convert_file(split_model.with_name("tiny-00002-of-00003.gguf"), ConvertRequest(factor=2.0))


def test_missing_split_is_refused(split_model: Path) -> None:
    split_model.with_name("tiny-00003-of-00003.gguf").unlink()
    message = "split tiny-00003-of-00003.gguf of tiny-00001-of-00003.gguf is missing"
    with pytest.raises(InputError, match=re.escape(message)):
        convert_file(split_model, ConvertRequest(factor=2.0))
    assert sorted(p.name for p in split_model.parent.iterdir()) == [
        "tiny-00001-of-00003.gguf",
        "tiny-00002-of-00003.gguf",
    ]


def test_converting_a_split_model_again_with_force(split_model: Path) -> None:
    convert_file(split_model, ConvertRequest(factor=4.0))
    again = convert_file(split_model, ConvertRequest(factor=4.0), overwrite=True)
    assert [w.action for w in again.outputs] == ["copy", "hardlink", "hardlink"]
    assert sorted(p.name for p in split_model.parent.iterdir()) == sorted(
        [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)] + [f"tiny.yarn-4x-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    )


# --- all or nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize("calls", [1, 2, 3])
def test_an_interrupted_split_conversion_leaves_no_split_behind(tmp_path: Path, calls: int) -> None:
    first = write_tiny_llama(tmp_path / "tiny.gguf", split_max_tensors=8)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after the first split, or during it
        convert_file(first, ConvertRequest(factor=2.0), progress=interrupt_on_call(calls))
    assert snapshot(tmp_path) == before  # no output split, no partial file


def test_a_failed_split_conversion_leaves_no_split_behind(tmp_path: Path) -> None:
    first = write_tiny_llama(tmp_path / "tiny.gguf", split_max_tensors=8)
    (tmp_path / "tiny.yarn-2x-00003-of-00003.gguf").mkdir()  # the last output cannot be replaced
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="is a folder"):  # found before anything is written
        convert_file(first, ConvertRequest(factor=2.0), overwrite=True)
    assert snapshot(tmp_path) == before
