"""Writing a GGUF file with an edited header: to a new file, or in place.

Either way the tensor data is never rewritten byte by byte where the filesystem can avoid
it (reflink clones, block insertion), and the result is verified by reading it back
before it counts: a file that does not read back as intended never replaces anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from yarn_cli.errors import VerificationError
from yarn_cli.files.copying import Progress, Unsupported, block_size, clone_range, copy_range, write_all
from yarn_cli.files.staging import Staging
from yarn_cli.gguf.header import Edits, GGUFHeader, build_header, edited_keys, read_header
from yarn_cli.gguf.inplace import rewrite_header


def verify_output(original: GGUFHeader, edits: Edits, written: Path, key_order: Sequence[str] | None = None) -> None:
    """Re-read the output: every key and tensor record as intended, the data section intact in size."""
    out = read_header(written)
    problems: list[str] = []
    expected_keys = edited_keys(original, edits, key_order)
    if list(out.fields) != expected_keys:
        problems.append("the key list differs")
    for key in expected_keys:
        got = out.fields.get(key)
        if got is None:
            continue
        want = edits.get(key)
        if want is not None:
            if got.scalar() != want:
                problems.append(f"{key} is {got.value!r}, expected {want.value!r}")
        elif got.raw != original.fields[key].raw:
            problems.append(f"{key} changed")
    if [t.raw for t in out.tensors] != [t.raw for t in original.tensors]:
        problems.append("the tensor records differ")
    if out.data_size != original.data_size:
        problems.append(f"the data section is {out.data_size:,} bytes, expected {original.data_size:,}")
    if (out.version, out.byteorder, out.alignment) != (original.version, original.byteorder, original.alignment):
        problems.append("the GGUF version, byte order or alignment changed")
    if problems:
        raise VerificationError(f"the new file did not verify ({'; '.join(problems)}); nothing was written")


def write_patched(
    header: GGUFHeader,
    edits: Edits,
    destination: Path,
    stage: Staging,
    *,
    key_order: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> tuple[str, int]:
    """Stage ``header`` + ``edits`` and the unchanged tensor data for ``destination``, verified.

    Returns how ("reflink" or "copy") and the bytes written.
    """
    new_header = build_header(header, edits, key_order)
    mode = header.path.stat().st_mode & 0o777
    with stage.output(destination, mode=mode) as (fd, tmp), header.path.open("rb") as src:
        shared = _clone_data(src.fileno(), fd, header, len(new_header), destination.parent)
        write_all(fd, new_header, 0)  # over the cloned tail of the old header, when cloned
        if shared:
            if progress:
                progress(len(new_header) + header.data_size)
        else:
            if progress:
                progress(len(new_header))
            copy_range(src.fileno(), fd, header.data_offset, len(new_header), header.data_size, progress)
        verify_output(header, edits, tmp, key_order)
    return ("reflink", len(new_header)) if shared else ("copy", len(new_header) + header.data_size)


def _clone_data(src_fd: int, dst_fd: int, header: GGUFHeader, new_data_offset: int, directory: Path) -> bool:
    """Share the tensor data's blocks with the input (reflink) where the filesystem can; False elsewhere.

    Clones start at a block boundary, so the clone takes the old header's last partial
    block along; the new header is then written over it.
    """
    size = block_size(directory)
    shift = new_data_offset - header.data_offset
    base = header.data_offset // size * size
    if shift % size or base + shift < 0:
        return False
    try:
        clone_range(src_fd, dst_fd, base, base + shift)
    except Unsupported:
        return False
    return True


def patch_in_place(
    header: GGUFHeader,
    edits: Edits,
    key_order: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[str, int]:
    """Only the header is written; the filesystem moves the data by whole blocks (Unsupported if it cannot).

    Returns how ("insert-range", "collapse-range" or "overwrite") and the bytes written.
    """
    new_header = build_header(header, edits, key_order)
    action = rewrite_header(
        header.path,
        header.data_offset,
        new_header,
        header.data_size,
        verify=lambda: verify_output(header, edits, header.path, key_order),
    )
    if progress:
        progress(header.file_size, header.file_size)
    return action, len(new_header)
