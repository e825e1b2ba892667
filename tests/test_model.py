"""Opening a model: one step for every command, the header read once, a pending in-place change refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from ggufs import CONTEXT
from typer.testing import CliRunner

from yarn_cli.cli.app import app
from yarn_cli.gguf import header
from yarn_cli.gguf.inplace import RecoveryError, undo_path
from yarn_cli.model import open_model

TEXT = Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt"


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """How often each file's header is parsed: the real reader, counted."""
    reads: Counter[Path] = Counter()
    real_init = header._HeaderReader.__init__

    def counted(self: header._HeaderReader, path: Path, *args: object, **kwargs: object) -> None:
        reads[Path(path).resolve()] += 1
        real_init(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(header._HeaderReader, "__init__", counted)
    return reads


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{model}"],
        ["inspect", "{model}", "--factor", "4", "--json"],
        ["convert", "{model}", "{out}", "--factor", "2"],
        ["convert", "{model}", "--factor", "2", "--dry-run"],
        ["convert", "{model}", "--in-place", "--factor", "2"],
        ["chat", "{model}", "-p", "the", "-n", "4", "--temp", "0", "-t", "1"],
        ["passkey", "{model}", "--lengths", "400", "--trials", "1", "--compare", "none,yarn:2", "-t", "1"],
        ["perplexity", "{model}", "--text", str(TEXT), "--contexts", "64,128", "--compare", "none,yarn:2", "-t", "1"],
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith("{") and "/" not in a),
)
def test_every_command_reads_the_model_header_once(
    tiny_model: Path, tmp_path: Path, header_reads: Counter[Path], args: list[str]
) -> None:
    out = tmp_path / "out.gguf"
    result = CliRunner().invoke(app, [a.format(model=tiny_model, out=out) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model_reads = header_reads.pop(tiny_model.resolve())
    assert model_reads == 1 + ("--in-place" in args)  # a file changed in place is read back to verify it
    assert sum(header_reads.values()) == int("{out}" in args)  # so is a new file, under its temporary name


def test_open_model_reads_the_state_the_commands_share(tiny_model: Path) -> None:
    model = open_model(str(tiny_model))  # library callers may pass a str
    assert model.path == tiny_model
    assert (model.context_length, model.original_context, model.rope.dims) == (CONTEXT, CONTEXT, 16)
    assert model.shape.kv_cache_bytes(1) == 2 * 2 * (16 + 16) * 2


def test_open_model_refuses_a_file_with_a_pending_in_place_change(tiny_model: Path) -> None:
    undo_path(tiny_model).write_bytes(b"")
    with pytest.raises(RecoveryError, match="--recover"):
        open_model(tiny_model)
