"""Zero-copy convert: in place by block insertion (ext4), and reflink copies (XFS), against cp.

In place: for each --sizes-gib, a synthetic GGUF in --dir is converted in place, alternating
YaRN x2 and its undo, --runs times each; every round also times ``cp`` of the same file
(the model is evicted from the page cache before each). Both the conversion in this process
(``convert_file``) and the whole command (``yarn-cli convert``, with Python's start-up) are
timed. Target: under 100 ms, the same for every size.

Reflink (root, xfsprogs): a loop-mounted XFS image with reflink gets a --reflink-gib model;
``yarn-cli convert IN OUT`` against ``cp --reflink=never`` (a real copy), with the blocks
each one adds.

    python benchmarks/convert_inplace.py [--sizes-gib 1.5,6] [--runs 3] [--dir /work] [--reflink-gib 1.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert_speed import evict, machine, write_synthetic

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.rope.scaling import Method


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yarn_cli", "convert", *args, "--quiet"]


def fs(path: Path) -> str:
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)], capture_output=True, text=True)
    return found.stdout.strip() or "?"


def free_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def in_place(size_gib: float, folder: Path, runs: int) -> None:
    model = folder / f"inplace-{size_gib:g}g.gguf"
    write_synthetic(model, int(size_gib * 2**30))
    size = model.stat().st_size
    library: list[float] = []
    command: list[float] = []
    copies: list[float] = []
    actions = set()
    try:
        for i in range(runs):
            for request in (ConvertRequest(factor=2.0), ConvertRequest(method=Method.NONE)):
                evict(model)
                start = time.perf_counter()
                result = convert_file(model, request, in_place=True)
                library.append(time.perf_counter() - start)
                actions.add(result.outputs[0].action)
            for args in (["--factor", "2"], ["--method", "none"]):
                evict(model)
                command.append(wall(cli(str(model), "--in-place", *args)))
            evict(model)
            copy = folder / f"inplace-copy-{i}.gguf"
            copies.append(wall(["cp", str(model), str(copy)]))
        print(
            f"{size / 2**30:.2f} GiB on {fs(folder)}: convert_file in place {statistics.median(library) * 1000:.0f} ms "
            f"(rounds {' '.join(f'{t * 1000:.0f}' for t in library)}), "
            f"yarn-cli convert --in-place {statistics.median(command) * 1000:.0f} ms "
            f"(rounds {' '.join(f'{t * 1000:.0f}' for t in command)}), "
            f"cp {statistics.median(copies):.2f} s; paths taken: {', '.join(sorted(actions))}",
            flush=True,
        )
    finally:
        for p in folder.glob("inplace-*"):
            p.unlink()


def reflink(size_gib: float, folder: Path, runs: int) -> None:
    image, mountpoint = folder / "reflink-bench.img", folder / "reflink-bench"
    mountpoint.mkdir(exist_ok=True)
    with image.open("wb") as fh:
        fh.truncate(int((size_gib * (runs + 2) + 1) * 2**30))
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        model = mountpoint / "model.gguf"
        write_synthetic(model, int(size_gib * 2**30))
        ours, theirs, ours_blocks, theirs_blocks = [], [], [], []
        for i in range(runs):
            evict(model)
            free = free_bytes(mountpoint)
            ours.append(wall(cli(str(model), str(mountpoint / f"yarn-{i}.gguf"), "--factor", "2")))
            ours_blocks.append(free - free_bytes(mountpoint))
            evict(model)
            free = free_bytes(mountpoint)
            start = time.perf_counter()
            subprocess.run(["cp", "--reflink=never", str(model), str(mountpoint / f"cp-{i}.gguf")], check=True)
            subprocess.run(["sync"], check=True)
            theirs.append(time.perf_counter() - start)
            theirs_blocks.append(free - free_bytes(mountpoint))
            (mountpoint / f"cp-{i}.gguf").unlink()
        result = convert_file(model, ConvertRequest(factor=2.0), output=mountpoint / "check.gguf")
        print(
            f"{model.stat().st_size / 2**30:.2f} GiB on XFS (reflink=1): yarn-cli convert IN OUT "
            f"{statistics.median(ours):.3f} s, {statistics.median(ours_blocks) / 2**20:.2f} MiB of new blocks "
            f"(path: {result.outputs[0].action}); cp --reflink=never && sync {statistics.median(theirs):.2f} s, "
            f"{statistics.median(theirs_blocks) / 2**20:,.0f} MiB of new blocks",
            flush=True,
        )
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        image.unlink()
        mountpoint.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-gib", default="1.5,6")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--reflink-gib", type=float, default=1.5, help="0 to skip the XFS part")
    args = parser.parse_args()
    print(f"machine: {machine()}; --dir {args.dir} is {fs(args.dir)}", flush=True)
    for size in (float(s) for s in args.sizes_gib.split(",")):
        in_place(size, args.dir, args.runs)
    if args.reflink_gib:
        reflink(args.reflink_gib, args.dir, args.runs)


if __name__ == "__main__":
    main()
