"""``yarn-cli convert`` against ``cp`` on a synthetic GGUF: time and peak memory.

Writes a real (non-sparse) GGUF of --size-gib with llama metadata, then times, alternating,
``cp IN OUT`` and ``yarn-cli convert IN OUT --factor 4`` (median of --runs each; the order
rotates every round, and each run starts after --settle seconds of rest). The page
cache is emptied of the model before every run, so both read it from the disk. cp's
copy is not durable when it returns; convert fsyncs before renaming, so ``cp && sync`` is
timed too, as the like-for-like comparison. Peak RSS comes from wait4(). Also times gguf's
own gguf-new-metadata once, and a split model whose later splits grow.

    python benchmarks/convert_speed.py [--size-gib 1.5] [--runs 3] [--dir /path/on/the/disk]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

CHUNK = 16 * 2**20
TENSOR = 256 * 2**20


def write_synthetic(path: Path, size: int, *, split_sizes: list[int] | None = None) -> list[Path]:
    """A GGUF with llama metadata and ``size`` bytes of random tensor data (or splits of given sizes)."""
    writer = GGUFWriter(path, "llama", split_max_tensors=1 if split_sizes else 0)
    writer.add_uint32("llama.context_length", 8192)
    writer.add_uint32("llama.embedding_length", 4096)
    writer.add_uint32("llama.block_count", 32)
    writer.add_uint32("llama.attention.head_count", 32)
    writer.add_uint32("llama.attention.head_count_kv", 8)
    writer.add_uint32("llama.rope.dimension_count", 128)
    writer.add_float32("llama.rope.freq_base", 500000.0)
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(32000)])
    if split_sizes:  # one tensor a split
        plan = [[s] for s in split_sizes]
    else:
        plan = [[TENSOR] * (size // TENSOR) + ([size % TENSOR] if size % TENSOR else [])]
    names = []
    for i, tensors in enumerate(plan):
        for j, n in enumerate(tensors):
            name = f"blk.{i}.{j}.weight"
            names.append(name)
            writer.add_tensor_info(name, (n,), np.dtype(np.int8), n)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, CHUNK, dtype=np.uint8).tobytes()
    assert writer.fout is not None
    for fout, tensors in zip(writer.fout, plan, strict=True):
        for n in tensors:
            writer.write_padding(fout, fout.tell())
            left = n
            while left:
                fout.write(block[: min(left, CHUNK)])
                left -= min(left, CHUNK)
            writer.write_padding(fout, n)
    writer.close()
    return writer.format_shard_names(path)


def evict(*paths: Path) -> None:
    """Write back and drop these files' pages, so the next run reads them from the disk.

    Only the model files are evicted: Python and its libraries stay cached, as they are for
    anyone who runs the tool twice, and the measurement is the copy, not a cold start.
    """
    subprocess.run(["sync"], check=True)
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(cmd: list[str], *, then_sync: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a command, run to completion.

    GNU time measures the RSS: a child forked from this (large) Python process would
    report this process's pages as its own peak.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name, *cmd], check=True, stdout=subprocess.DEVNULL)
        if then_sync:
            subprocess.run(["sync"], check=True)
        seconds = time.perf_counter() - start
        return seconds, int(rss.read().split()[-1]) * 1024


def breakdown(model: Path, folder: Path, rounds: int) -> None:
    """Time convert's steps in this process against cp and sync, to see where any gap is."""
    from yarn_cli.conversion import ConvertRequest, plan_conversion
    from yarn_cli.files.copying import copy_range
    from yarn_cli.files.staging import atomic_output
    from yarn_cli.gguf.header import build_header
    from yarn_cli.gguf.rewrite import verify_output
    from yarn_cli.model import open_model

    print("\nstep by step, in this process (s):")
    for i in range(rounds):
        evict(model)
        t0 = time.perf_counter()
        subprocess.run(["cp", str(model), str(folder / f"b-cp-{i}.gguf")], check=True)
        t1 = time.perf_counter()
        subprocess.run(["sync"], check=True)
        t2 = time.perf_counter()
        evict(model)
        t3 = time.perf_counter()
        opened = open_model(model)
        header = opened.header
        plan = plan_conversion(opened, ConvertRequest(factor=4.0))
        new_header = build_header(header, plan.edits)
        t4 = time.perf_counter()
        with atomic_output(folder / f"b-out-{i}.gguf", mode=0o644) as (fd, tmp), model.open("rb") as src:
            os.write(fd, new_header)
            copy_range(src.fileno(), fd, header.data_offset, len(new_header), header.data_size)
            t5 = time.perf_counter()
            verify_output(header, plan.edits, tmp)
            t6 = time.perf_counter()
        t7 = time.perf_counter()
        print(
            f"  cp {t1 - t0:.2f} + sync {t2 - t1:.2f} = {t2 - t0:.2f} | header {t4 - t3:.2f} + copy {t5 - t4:.2f} "
            f"+ verify {t6 - t5:.2f} + fsync/rename {t7 - t6:.2f} = {t7 - t3:.2f}"
        )


def yarn_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yarn_cli", "convert", *args, "--factor", "4", "--quiet", "--force"]


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to test (default: a temp dir)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of rest after evicting (default 3)")
    parser.add_argument("--skip-split", action="store_true")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N", help="also time convert's steps N times")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="yarn-bench-", dir=args.dir))
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(folder)], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine()}; filesystem: {fstype} ({folder})")
    try:
        size = int(args.size_gib * 2**30)
        model = write_synthetic(folder / "model.gguf", size)[0]
        print(f"model: {model.stat().st_size / 2**30:.2f} GiB synthetic GGUF")
        print("the model's pages are written back and dropped from the cache before each run")
        results: dict[str, list[tuple[float, int]]] = {"cp": [], "cp && sync": [], "yarn-cli convert": []}
        # Outputs are kept until the end: deleting a 1.5 GiB file makes the filesystem free (and,
        # mounted with discard, trim) its blocks, which would slow down whichever run comes next.
        for i in range(args.runs):
            commands = [
                ("cp", ["cp", str(model), str(folder / f"cp-{i}.gguf")], False),
                ("cp && sync", ["cp", str(model), str(folder / f"cps-{i}.gguf")], True),
                ("yarn-cli convert", yarn_cli(str(model), str(folder / f"out-{i}.gguf")), False),
            ]
            # Rotate the order each round: the disk is slower just after a big write, and no
            # command should always be the one that follows another's.
            shift = i % len(commands)
            for name, cmd, then_sync in commands[shift:] + commands[:shift]:
                evict(model)
                time.sleep(args.settle)
                results[name].append(timed(cmd, then_sync=then_sync))
                if fstype == "tmpfs":  # memory: nothing to trim, and no room to keep them
                    Path(cmd[-5] if name == "yarn-cli convert" else cmd[-1]).unlink()
        evict(model)
        gguf_new = timed(
            [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(model), str(folder / "g.gguf"),
             "--general-description", "benchmark", "--force"],
        )  # fmt: skip
        (folder / "g.gguf").unlink(missing_ok=True)
        small = write_synthetic(folder / "small.gguf", 100 * 2**20)[0]
        evict(small)
        small_rss = timed(yarn_cli(str(small), str(folder / "small-out.gguf")))[1]
        print(f"\n{'command':22} {'median s':>9} {'runs':>24} {'peak RSS':>10}")
        medians = {}
        for name, runs in results.items():
            medians[name] = statistics.median(s for s, _ in runs)
            print(
                f"{name:22} {medians[name]:9.2f} {' '.join(f'{s:.2f}' for s, _ in runs):>24} "
                f"{max(r for _, r in runs) / 2**20:8.0f} MB"
            )
        print(f"{'gguf-new-metadata':22} {gguf_new[0]:9.2f} {'(1 run)':>24} {gguf_new[1] / 2**20:8.0f} MB")
        convert = medians["yarn-cli convert"]
        print(f"\nratio convert / cp: {convert / medians['cp']:.2f}; convert / (cp && sync): "
              f"{convert / medians['cp && sync']:.2f} (target <= 1.10)")  # fmt: skip
        print(f"peak RSS of convert: {max(r for _, r in results['yarn-cli convert']) / 2**20:.0f} MB at "
              f"{args.size_gib:g} GiB, {small_rss / 2**20:.0f} MB at 0.1 GiB (target <= 150 MB)")  # fmt: skip
        if args.breakdown:
            breakdown(model, folder, args.breakdown)
        if not args.skip_split:
            print("\nsplit model (first split 64 MiB, later splits hard-linked):")
            for later in (2**28, 2**30 + 2**29):
                sub = folder / f"split-{later}"
                sub.mkdir()
                first = write_synthetic(sub / "m.gguf", 0, split_sizes=[64 * 2**20, later // 2, later // 2])[0]
                times = []
                for _ in range(args.runs):
                    evict(*sub.glob("m-*.gguf"))
                    times.append(timed(yarn_cli(str(first), str(sub / "out.gguf")))[0])
                total = sum(p.stat().st_size for p in sub.glob("m-*.gguf"))
                print(f"  later splits {later / 2**30:.2f} GiB (model {total / 2**30:.2f} GiB): "
                      f"median {statistics.median(times):.2f} s over {args.runs} runs")  # fmt: skip
                shutil.rmtree(sub)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
