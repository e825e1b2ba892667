"""Damaged GGUF headers through ``inspect`` and ``convert --dry-run``: a clean error or a right answer.

The tiny model's header (every byte before the tensor data) is mutated at random: bits
flipped, bytes overwritten, huge counts and lengths written over it, the file cut short.
Whatever comes out, the commands must end with a yarn-cli error (one line on the command
line) or a correct result, never with another exception, and within seconds. FUZZ_EXAMPLES=3000
runs more cases than the default 300.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gguf import GGUFValueType
from ggufs import write_tiny_llama
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from yarn_cli.cli.app import app
from yarn_cli.errors import NotGGUFError, YarnCliError
from yarn_cli.gguf.header import read_header

SECONDS_PER_CASE = 10
HUGE = [2**31 - 1, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1]


class Original:
    """The tiny model's bytes and where its tensor data starts (shown by name only in reports)."""

    def __init__(self, path: Path) -> None:
        self.content = path.read_bytes()
        self.header_end = read_header(path).data_offset

    def __repr__(self) -> str:
        return f"Original({len(self.content)} bytes, header {self.header_end} bytes)"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    return Original(write_tiny_llama(tmp_path_factory.mktemp("fuzz") / "tiny.gguf"))


@st.composite
def damage(draw: st.DrawFn, size: int, header_end: int) -> tuple[str, int, bytes | int]:
    kind = draw(st.sampled_from(["flip", "bytes", "huge", "truncate"]))
    at = draw(st.integers(0, header_end - 1))
    if kind == "flip":
        return kind, at, draw(st.integers(0, 7))
    if kind == "bytes":
        return kind, at, draw(st.binary(min_size=1, max_size=8))
    if kind == "huge":
        return kind, at, struct.pack("<Q", draw(st.sampled_from(HUGE)))
    return kind, draw(st.integers(0, size - 1)), 0


def damaged(data: bytes, kind: str, at: int, what: bytes | int) -> bytes:
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        assert isinstance(what, int)
        return data[:at] + bytes([data[at] ^ (1 << what)]) + data[at + 1 :]
    assert isinstance(what, bytes)
    return data[:at] + what + data[at + len(what) :]


@contextmanager
def time_box(seconds: int) -> Iterator[None]:
    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        # the command line turns a YarnCliError into its one line; anything else is a traceback there
        assert isinstance(result.exception, YarnCliError), repr(result.exception)


# No shrinking: a case that runs into the time box would be run again and again; the draw is small
# enough to read as it is.
@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_a_damaged_header_is_a_clean_error_or_a_right_answer(
    original: Original, tmp_path: Path, data: st.DataObject
) -> None:
    content = original.content
    kind, at, what = data.draw(damage(len(content), original.header_end))
    path = tmp_path / "damaged.gguf"
    path.write_bytes(damaged(content, kind, at, what))
    with time_box(SECONDS_PER_CASE):
        run(["inspect", str(path), "--json"])
        run(["inspect", str(path), "--factor", "4"])
        run(["convert", str(path), str(tmp_path / "out.gguf"), "--factor", "2", "--dry-run", "--force"])
    assert not (tmp_path / "out.gguf").exists()


def test_a_huge_tensor_count_is_one_clean_error(original: Original, tmp_path: Path) -> None:
    """One damage the fuzzing draws, checked by hand: a tensor count of 2^63 over the header's own."""
    path = tmp_path / "huge.gguf"
    path.write_bytes(damaged(original.content, "huge", 8, struct.pack("<Q", 2**63 - 1)))  # magic, version, count
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, NotGGUFError)
    assert "the GGUF header is truncated or corrupt" in str(result.exception)


def test_an_absurd_rotary_dimension_count_is_one_clean_error(tmp_path: Path) -> None:
    """The case the fuzzing found: 2^31 rotary dims made inspect --factor build a table of a billion pairs."""
    path = write_tiny_llama(tmp_path / "dims.gguf", extra={"llama.rope.dimension_count": (2**31, GGUFValueType.UINT32)})
    with time_box(SECONDS_PER_CASE):
        result = CliRunner().invoke(app, ["inspect", str(path), "--factor", "4"])
    assert isinstance(result.exception, NotGGUFError)
    assert "llama.rope.dimension_count (or the head size it defaults to) is 2,147,483,648" in str(result.exception)
