"""Zero-copy convert: blocks inserted in place (ext4, XFS), shared by reflink (XFS), crash recovery.

Crashes are real: the converting process is killed (``os._exit``) at each step, with no
clean-up code running, and the next run must yield the original or the converted file,
byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ggufs import write_tiny_llama
from helpers import error_line, interrupt_on_call, sha256, snapshot, sweep
from logits import TINY_TOKENS, YARN, logits, trained

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.files.copying import Unsupported
from yarn_cli.files.faults import CRASH_ENV, CRASH_EXIT, CRASH_STEPS
from yarn_cli.gguf.header import read_header
from yarn_cli.gguf.inplace import (
    UNDO_SUFFIX,
    RecoveryError,
    UndoRecord,
    check_not_pending,
    locked,
    plan_shift,
    undo_path,
)
from yarn_cli.model import open_model
from yarn_cli.rope.scaling import Method


def fs_type(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def moves_blocks(path: Path) -> bool:
    """ext4 ('ext2/ext3' to stat) and XFS can insert and collapse ranges."""
    return fs_type(path) in ("ext2/ext3", "xfs")


def data_bytes(path: Path) -> bytes:
    header = read_header(path)
    with path.open("rb") as fh:
        fh.seek(header.data_offset)
        return fh.read()


def converted_by_copy(model: Path, directory: Path, **request: object) -> Path:
    """The same conversion written to a new file in ``directory``/reference, by the copy path."""
    (directory / "reference").mkdir(exist_ok=True)
    output = directory / "reference" / model.name
    return convert_file(model, ConvertRequest(**request), output=output).outputs[0].path  # type: ignore[arg-type]


# --- in place on the filesystem the tests run on ----------------------------------------------


def test_in_place_moves_no_data_and_equals_the_copy(tiny_model: Path, tmp_path: Path) -> None:
    untouched = tmp_path / "untouched.gguf"
    shutil.copyfile(tiny_model, untouched)
    original, inode = sha256(tiny_model), tiny_model.stat().st_ino
    size, data = tiny_model.stat().st_size, data_bytes(tiny_model)
    reference = converted_by_copy(tiny_model, tmp_path, factor=2.0)
    result = convert_file(tiny_model, ConvertRequest(factor=2.0), in_place=True)
    written = result.outputs[0]
    if not moves_blocks(tmp_path):
        assert written.action == "copy" and result.fallback is not None
        pytest.skip(f"{fs_type(tmp_path)} cannot move blocks: the copy path was taken, as it said")
    assert written.action == "insert-range" and result.fallback is None
    assert written.bytes_copied == read_header(tiny_model).data_offset  # only the header was written
    assert tiny_model.stat().st_ino == inode
    grown = tiny_model.stat().st_size - size
    assert grown > 0 and grown % os.statvfs(tmp_path).f_bsize == 0
    assert data_bytes(tiny_model) == data
    assert sha256(tiny_model) == sha256(reference)
    assert trained(tiny_model) == (512, 0.5)
    at_runtime = logits(untouched, TINY_TOKENS, 256, rope_scaling_type=YARN, rope_freq_scale=0.5, yarn_orig_ctx=256)
    assert np.array_equal(logits(tiny_model, TINY_TOKENS, 256), at_runtime)
    back = convert_file(tiny_model, ConvertRequest(method=Method.NONE), in_place=True)
    assert back.outputs[0].action == "collapse-range"
    assert sha256(tiny_model) == original and tiny_model.stat().st_ino == inode
    assert not undo_path(tiny_model).exists()


@pytest.mark.slow
def test_in_place_logits_equal_the_runtime_scaling(smollm2: Path, tmp_path: Path) -> None:
    model = tmp_path / "smol.gguf"
    shutil.copyfile(smollm2, model)
    result = convert_file(model, ConvertRequest(factor=4.0), in_place=True)
    assert result.outputs[0].action == ("insert-range" if moves_blocks(tmp_path) else "copy")
    assert trained(model) == (32768, 0.25)
    tokens = list(range(1000, 1128))
    at_runtime = logits(smollm2, tokens, 256, rope_scaling_type=YARN, rope_freq_scale=0.25, yarn_orig_ctx=8192)
    assert np.array_equal(logits(model, tokens, 256), at_runtime)
    convert_file(model, ConvertRequest(method=Method.NONE), in_place=True)
    assert sha256(model) == sha256(smollm2)


# --- crashes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["scale", "undo"])
@pytest.mark.parametrize("step", sweep(CRASH_STEPS))
def test_a_crash_at_any_step_recovers_to_one_of_the_two_files(
    run_cli, tiny_model: Path, tmp_path: Path, step: str, direction: str
) -> None:
    if not moves_blocks(tmp_path):
        pytest.skip(f"{fs_type(tmp_path)} cannot move blocks; in-place changes go through a copy there")
    original = sha256(tiny_model)
    scaled = sha256(converted_by_copy(tiny_model, tmp_path, factor=2.0))
    if direction == "scale":
        args, before, after = ["--factor", "2"], original, scaled
    else:
        convert_file(tiny_model, ConvertRequest(factor=2.0), in_place=True)
        args, before, after = ["--method", "none"], scaled, original
    assert sha256(tiny_model) == before

    crashed = run_cli("convert", tiny_model, "--in-place", *args, env={CRASH_ENV: step})
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert undo_path(tiny_model).exists()

    recovered = run_cli("convert", tiny_model, "--recover")
    assert recovered.returncode == 0, recovered.stderr
    expected = before if step == "after-undo-record" else after  # data not yet moved: undo; moved: complete
    assert sha256(tiny_model) == expected
    assert ("undone" if expected == before else "completed") in recovered.stderr
    assert not undo_path(tiny_model).exists()
    assert [p.name for p in tiny_model.parent.iterdir() if p.name.endswith((UNDO_SUFFIX, ".partial"))] == []


def test_the_next_convert_recovers_first_and_says_so(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    if not moves_blocks(tmp_path):
        pytest.skip(f"{fs_type(tmp_path)} cannot move blocks; in-place changes go through a copy there")
    scaled = sha256(converted_by_copy(tiny_model, tmp_path, factor=2.0))
    crashed = run_cli("convert", tiny_model, "--in-place", "--factor", "2", env={CRASH_ENV: "mid-header"})
    assert crashed.returncode == CRASH_EXIT
    again = run_cli("convert", tiny_model, "--in-place", "--factor", "2", "--json")
    assert again.returncode == 0, again.stderr
    assert '"recovered": "completed"' in again.stdout
    assert sha256(tiny_model) == scaled  # completed, then the same change again: nothing else moved


def test_a_file_that_cannot_be_written_is_one_clear_line(run_cli, tiny_model: Path) -> None:
    if os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(tiny_model)]).returncode != 0:
        pytest.skip("making a file immutable needs root and chattr")
    try:
        before = sha256(tiny_model)
        result = run_cli("convert", tiny_model, "--in-place", "--factor", "2")
        assert result.returncode == 1
        assert "Operation not permitted" in error_line(result)
        assert sha256(tiny_model) == before and not undo_path(tiny_model).exists()
    finally:
        subprocess.run(["chattr", "-i", str(tiny_model)], check=True)


@pytest.mark.slow
def test_recover_with_nothing_to_do(run_cli, tiny_model: Path) -> None:
    result = run_cli("convert", tiny_model, "--recover")
    assert result.returncode == 0
    assert "nothing to recover" in result.stderr


@pytest.mark.slow
def test_a_damaged_undo_record_changes_nothing(run_cli, tiny_model: Path) -> None:
    before = sha256(tiny_model)
    undo_path(tiny_model).write_bytes(b"YARN-CLI-UNDO 1\n{broken")
    result = run_cli("convert", tiny_model, "--recover")
    assert result.returncode == 1
    assert "is damaged" in error_line(result)
    assert sha256(tiny_model) == before and undo_path(tiny_model).exists()


@pytest.mark.parametrize("command", sweep(["chat", "passkey", "perplexity"]))  # inspect warns instead
def test_other_commands_refuse_a_file_with_a_pending_change(run_cli, tiny_model: Path, command: str) -> None:
    undo_path(tiny_model).write_bytes(b"")
    extra = ["--text", tiny_model] if command == "perplexity" else []
    result = run_cli(command, tiny_model, *extra)
    assert result.returncode == 1
    assert "--recover" in error_line(result)


def test_library_callers_may_pass_a_string_path(tiny_model: Path) -> None:
    check_not_pending(str(tiny_model))
    undo_path(tiny_model).write_bytes(b"")
    with pytest.raises(RecoveryError, match="--recover"):
        open_model(str(tiny_model))


def test_undo_record_round_trip_and_checksum(tmp_path: Path) -> None:
    record = UndoRecord(old_size=10_000, old_header=b"old" * 50, new_header=b"new" * 60, offset=4096,
                        shift=4096, probe="ab" * 32)  # fmt: skip
    data = record.to_bytes()
    assert UndoRecord.from_bytes(data, tmp_path / "x") == record
    damaged = bytearray(data)
    damaged[-1] ^= 1
    with pytest.raises(RecoveryError, match="checksum"):
        UndoRecord.from_bytes(bytes(damaged), tmp_path / "x")


def test_plan_shift_needs_whole_blocks(tmp_path: Path) -> None:
    block = os.statvfs(tmp_path).f_bsize
    assert plan_shift(tmp_path / "m.gguf", 5000, 5000 + 2 * block, 10**6) == (5000 // block * block, 2 * block)
    assert plan_shift(tmp_path / "m.gguf", 5000 + block, 5000, 10**6) == (
        (5000 + block) // block * block - block,
        -block,
    )
    with pytest.raises(Unsupported, match="whole"):
        plan_shift(tmp_path / "m.gguf", 5000, 5032, 10**6)


# --- where blocks cannot move: tmpfs ----------------------------------------------------------


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    if fs_type(Path("/dev/shm")) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm on this machine")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as name:
        yield Path(name)


def test_tmpfs_falls_back_to_an_atomic_copy_and_says_so(run_cli, tmpfs_dir: Path) -> None:
    model = write_tiny_llama(tmpfs_dir / "tiny.gguf")
    original, inode = sha256(model), model.stat().st_ino
    result = run_cli("convert", model, "--in-place", "--factor", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert '"path": "copy"' in result.stdout and "cannot be moved in place here" in result.stdout
    assert model.stat().st_ino != inode  # a new file renamed over the old one
    assert read_header(model).fields["llama.context_length"].scalar().value == 512  # type: ignore[union-attr]
    convert_file(model, ConvertRequest(method=Method.NONE), in_place=True)
    assert sha256(model) == original
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["tiny.gguf"]


@pytest.mark.slow
def test_a_hard_linked_file_is_not_changed_through_a_copy(run_cli, tmpfs_dir: Path) -> None:
    model = write_tiny_llama(tmpfs_dir / "tiny.gguf")
    os.link(model, tmpfs_dir / "other-name.gguf")
    original = sha256(model)
    result = run_cli("convert", model, "--in-place", "--factor", "2")
    assert result.returncode == 1
    assert "has 2 names (hard links) and here the change can only be made through a copy" in error_line(result)
    assert sha256(model) == sha256(tmpfs_dir / "other-name.gguf") == original
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["other-name.gguf", "tiny.gguf"]


@pytest.mark.slow
def test_interrupted_in_place_copy_leaves_the_input_untouched(tmpfs_dir: Path) -> None:
    big = write_tiny_llama(tmpfs_dir / "big.gguf", pad_mib=192)
    before = sha256(big)
    interrupt = interrupt_on_call(2)  # after the header and the first block of tensor data
    with pytest.raises(KeyboardInterrupt):
        convert_file(big, ConvertRequest(factor=2.0), progress=interrupt, in_place=True)
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["big.gguf"]
    assert sha256(big) == before


@pytest.mark.slow
def test_in_place_through_a_link_on_tmpfs_changes_the_target_and_keeps_the_link(
    run_cli, tmpfs_dir: Path, tmp_path: Path
) -> None:
    target = write_tiny_llama(tmpfs_dir / "target.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(target)
    original = sha256(target)
    result = run_cli("convert", link, "--in-place", "--factor", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert '"path": "copy"' in result.stdout  # the fallback: a new file renamed over the target
    assert link.is_symlink() and link.resolve() == target
    assert read_header(target).fields["llama.context_length"].scalar().value == 512  # type: ignore[union-attr]
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["target.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.gguf"]
    undone = run_cli("convert", link, "--in-place", "--method", "none")
    assert undone.returncode == 0, undone.stderr
    assert link.is_symlink() and sha256(target) == original


@pytest.mark.slow
def test_in_place_through_a_link_records_its_undo_beside_the_target(run_cli, tmp_path: Path) -> None:
    if not moves_blocks(tmp_path):
        pytest.skip(f"{fs_type(tmp_path)} cannot move blocks; in-place changes go through a copy there")
    (tmp_path / "models").mkdir()
    target = write_tiny_llama(tmp_path / "models" / "target.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(Path("models") / "target.gguf")
    scaled = sha256(converted_by_copy(target, tmp_path, factor=2.0))
    crashed = run_cli("convert", link, "--in-place", "--factor", "2", env={CRASH_ENV: "after-shift"})
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert (tmp_path / "models" / f"target.gguf{UNDO_SUFFIX}").exists()  # found by every name of the file
    assert not (tmp_path / f"link.gguf{UNDO_SUFFIX}").exists()
    pending = run_cli("passkey", target, "--lengths", "400")
    assert error_line(pending) == (
        f"Error: an in-place change of {target} was interrupted (target.gguf{UNDO_SUFFIX} is beside it); "
        f"run: yarn-cli convert {target} --recover"
    )
    recovered = run_cli("convert", link, "--recover")
    assert recovered.returncode == 0, recovered.stderr
    assert "completed" in recovered.stderr
    assert link.is_symlink() and sha256(target) == scaled
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["target.gguf"]


# --- reflink on XFS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 600 MB XFS filesystem with reflink, in a file, loop-mounted (needs root and mkfs.xfs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting an XFS image needs root")
    assert shutil.which("mkfs.xfs"), "mkfs.xfs is missing: the README's test set-up installs xfsprogs"
    base = tmp_path_factory.mktemp("xfs")
    image, mountpoint = base / "xfs.img", base / "mnt"
    mountpoint.mkdir()
    with image.open("wb") as fh:
        fh.truncate(600 * 2**20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot loop-mount a file: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def free_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


@pytest.mark.slow
def test_reflink_shares_the_data_blocks(xfs: Path, tmp_path: Path) -> None:
    model = write_tiny_llama(xfs / "big.gguf", pad_mib=160)
    reference = converted_by_copy(model, tmp_path, factor=2.0)  # on ext4: a plain copy
    free = free_bytes(xfs)
    result = convert_file(model, ConvertRequest(factor=2.0), output=xfs / "big.yarn.gguf")
    assert result.outputs[0].action == "reflink"
    assert result.outputs[0].bytes_copied < 2**20
    assert free - free_bytes(xfs) < 2**20  # a 160 MB model, less than 1 MB of new blocks
    assert sha256(result.outputs[0].path) == sha256(reference)
    undone = convert_file(result.outputs[0].path, ConvertRequest(method=Method.NONE), output=xfs / "undone.gguf")
    assert undone.outputs[0].action == "reflink"
    assert sha256(undone.outputs[0].path) == sha256(model)
    for p in (model, result.outputs[0].path, undone.outputs[0].path):
        p.unlink()


@pytest.mark.slow
def test_xfs_in_place_inserts_blocks(xfs: Path, tmp_path: Path) -> None:
    model = write_tiny_llama(xfs / "tiny.gguf")
    original = sha256(model)
    reference = converted_by_copy(model, tmp_path, factor=2.0)
    result = convert_file(model, ConvertRequest(factor=2.0), in_place=True)
    assert result.outputs[0].action == "insert-range"
    assert sha256(model) == sha256(reference)
    assert convert_file(model, ConvertRequest(method=Method.NONE), in_place=True).outputs[0].action == "collapse-range"
    assert sha256(model) == original
    model.unlink()


# --- in-place changes: one at a time, never by a dry run ----------------------------------------


@pytest.mark.slow
def test_a_second_in_place_change_refuses_while_the_first_holds_the_file(run_cli, tiny_model: Path) -> None:
    before = sha256(tiny_model)
    with locked(tiny_model, exclusive=True):  # as a first `convert --in-place` does, throughout
        second = run_cli("convert", tiny_model, "--in-place", "--factor", "2")
        recovery = run_cli("convert", tiny_model, "--recover")
        undo_path(tiny_model).write_bytes(b"")  # the first one's undo record, mid-change
        reader = run_cli("chat", tiny_model, "-p", "hi")
        shown = run_cli("inspect", tiny_model)
    for result in (second, recovery, reader):
        assert result.returncode == 1
        assert "is being changed in place by another yarn-cli right now" in error_line(result)
    assert shown.returncode == 0 and "Warning:" in shown.stderr and "being changed in place" in shown.stderr
    assert sha256(tiny_model) == before


def test_a_dry_run_never_recovers_or_writes(run_cli, tiny_model: Path) -> None:
    undo_path(tiny_model).write_bytes(b"YARN-CLI-UNDO 1\n{}\n")  # an interrupted change's record
    before = snapshot(tiny_model.parent)
    result = run_cli("convert", tiny_model, "--factor", "2", "--dry-run")
    assert result.returncode == 1 and "--recover" in error_line(result)
    assert snapshot(tiny_model.parent) == before
