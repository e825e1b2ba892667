"""Benchmark ``yarn-cli convert`` (header rewrite + in-kernel data copy) against ``cp``.

What it does, in order:

1. Writes a synthetic GGUF of --size-gib (llama metadata: context_length, rope keys, a small
   vocabulary; F16 tensors of 256 MiB filled with random bytes, never the whole array in memory)
   and checks that gguf.GGUFReader parses it.
2. Times, alternating, ``cp IN OUT`` and ``yarn-cli convert IN OUT2 --factor 4 --quiet --force``
   (and, unless --no-cp-sync, ``cp IN OUT && sync``, because convert fsyncs its output before it
   renames it and cp does not), --runs times each. Before every timed run the previous outputs
   are deleted and ``sync`` is run, so no earlier write-back lands in the measurement. Each
   command is a subprocess timed with time.perf_counter; its peak RSS comes from GNU time's %M
   (or os.wait4 where GNU time is missing). Reports medians and the ratio convert / cp.
3. Checks the converted file once: the rope keys are set and the tensor data is byte-identical.
4. Measures convert's peak RSS on a small file (--small-gib) too, to show RSS does not grow with
   the model's size.
5. Times gguf-py's own gguf-new-metadata copy once (time and peak RSS), the baseline.
6. Builds split models whose first split is small (one 16 MiB tensor) and whose later splits hold
   --split-gib in total, and times ``yarn-cli convert FIRST_SPLIT --factor 4 --quiet --force``:
   the later splits are hard-linked, so the time should not depend on their size.

Example (the full run documented in docs/benchmarks.md):

    python benchmarks/convert_bench.py --dir /work/bench-tmp --json /tmp/convert_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType

GIB = 2**30
MIB = 2**20
TENSOR_BYTES = 256 * MIB
N_EMBD = 4096
ROW_BYTES = N_EMBD * 2  # one F16 row
WRITE_CHUNK = 16 * MIB
GNU_TIME = "/usr/bin/time"
CONTEXT = 8192
FACTOR = 4


# ---------------------------------------------------------------------------------------------
# Synthetic models


def _llama_metadata(writer: GGUFWriter) -> None:
    writer.add_name("yarn-cli benchmark model")
    writer.add_uint32("llama.context_length", CONTEXT)
    writer.add_uint32("llama.embedding_length", N_EMBD)
    writer.add_uint32("llama.block_count", 32)
    writer.add_uint32("llama.feed_forward_length", 14336)
    writer.add_uint32("llama.attention.head_count", 32)
    writer.add_uint32("llama.attention.head_count_kv", 8)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32("llama.rope.dimension_count", 128)
    writer.add_float32("llama.rope.freq_base", 500000.0)
    writer.add_uint32("general.file_type", 1)  # mostly F16
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [f"▁tok{i}" for i in range(741)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * 741
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", [0.0] * len(tokens))
    writer.add_array("tokenizer.ggml.token_type", [int(t) for t in types])
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)


def _tensor_sizes(total: int) -> list[int]:
    """Tensor byte sizes summing to ``total`` rounded down to whole F16 rows: 256 MiB each, then the rest."""
    total -= total % ROW_BYTES
    sizes = [TENSOR_BYTES] * (total // TENSOR_BYTES)
    if total % TENSOR_BYTES:
        sizes.append(total % TENSOR_BYTES)
    return sizes


def write_gguf(path: Path, tensors: list[int], *, split_max_tensors: int = 0) -> list[Path]:
    """Write a llama-metadata GGUF whose F16 tensors have the given byte sizes; returns the file(s).

    The header is GGUFWriter's; the tensor data is streamed here in 16 MiB chunks of one random
    block, with the same layout as GGUFWriter.write_tensors_to_file: the data section starts at the
    next multiple of the alignment after the tensor infos, and every tensor is zero-padded to a
    multiple of the alignment (the tensor infos' offsets assume exactly that).
    """
    writer = GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    _llama_metadata(writer)
    names = []
    for i, nbytes in enumerate(tensors):
        assert nbytes % ROW_BYTES == 0
        name = "token_embd.weight" if i == 0 else f"blk.{i - 1}.ffn_up.weight"
        names.append(name)
        writer.add_tensor_info(
            name, (nbytes // ROW_BYTES, N_EMBD), np.dtype(np.float16), nbytes, raw_dtype=GGMLQuantizationType.F16
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    block = memoryview(np.random.default_rng(0).bytes(WRITE_CHUNK))
    assert writer.fout is not None
    for fout, split in zip(writer.fout, writer.tensors, strict=True):
        writer.write_padding(fout, fout.tell())
        for ti in split.values():
            left = ti.nbytes
            while left:
                n = min(left, WRITE_CHUNK)
                fout.write(block[:n])
                left -= n
            writer.write_padding(fout, ti.nbytes)
    writer.close()
    return writer.format_shard_names(path)


def check_gguf(path: Path, *, expect_tensors: int | None = None) -> GGUFReader:
    """Parse with gguf.GGUFReader; the last tensor must end (padded) exactly at the end of the file."""
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"]
    if bytes(arch.parts[arch.data[0]]).decode() != "llama":
        raise SystemExit(f"{path}: general.architecture is not llama")
    if expect_tensors is not None and len(reader.tensors) != expect_tensors:
        raise SystemExit(f"{path}: {len(reader.tensors)} tensors, expected {expect_tensors}")
    if reader.tensors:
        last = reader.tensors[-1]
        end = last.data_offset + GGUFWriter.ggml_pad(int(last.n_bytes), reader.alignment)
    else:
        end = reader.data_offset
    size = path.stat().st_size
    if end != size:
        raise SystemExit(f"{path}: tensor data ends at {end:,}, the file is {size:,} bytes")
    return reader


def field_value(reader: GGUFReader, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def verify_conversion(src: Path, dst: Path) -> list[str]:
    """Problems with a converted file: wrong rope keys, or tensor data not byte-identical."""
    problems = []
    a, b = GGUFReader(src), GGUFReader(dst)
    want = {
        "llama.context_length": CONTEXT * FACTOR,
        "llama.rope.scaling.type": "yarn",
        "llama.rope.scaling.factor": float(FACTOR),
        "llama.rope.scaling.original_context_length": CONTEXT,
    }
    for key, value in want.items():
        got = field_value(b, key)
        if got != value:
            problems.append(f"{key} is {got!r}, expected {value!r}")
    if [(t.name, t.data_offset - a.data_offset) for t in a.tensors] != [
        (t.name, t.data_offset - b.data_offset) for t in b.tensors
    ]:
        problems.append("tensor records differ")
    size_a = src.stat().st_size - a.data_offset
    size_b = dst.stat().st_size - b.data_offset
    if size_a != size_b:
        problems.append(f"data section is {size_b:,} bytes, expected {size_a:,}")
    del a, b
    with src.open("rb") as fa, dst.open("rb") as fb:
        fa.seek(GGUFReader(src).data_offset)
        fb.seek(GGUFReader(dst).data_offset)
        while True:
            x, y = fa.read(WRITE_CHUNK), fb.read(WRITE_CHUNK)
            if x != y:
                problems.append("tensor data differs")
                break
            if not x:
                break
    return problems


# ---------------------------------------------------------------------------------------------
# Running and timing


def sync() -> None:
    subprocess.run(["sync"], check=True)


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache (it must be written back already)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def has_gnu_time() -> bool:
    try:
        out = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return False
    return "GNU" in (out.stdout + out.stderr)


def run_timed(cmd: list[str], *, gnu_time: bool) -> tuple[float, int]:
    """Run ``cmd`` to completion: (wall seconds, peak RSS in bytes). Raises if it fails."""
    if gnu_time:
        with tempfile.NamedTemporaryFile("r", prefix="rss-") as rss:
            start = time.perf_counter()
            proc = subprocess.run(
                [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            seconds = time.perf_counter() - start
            text = rss.read().split()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        return seconds, int(text[-1]) * 1024
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024


def remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def yarn_cli_exe() -> str:
    beside = Path(sys.executable).parent / "yarn-cli"
    found = str(beside) if beside.exists() else shutil.which("yarn-cli")
    if not found:
        raise SystemExit("yarn-cli is not on PATH; activate the project's virtualenv")
    return found


def gguf_new_metadata_cmd() -> list[str]:
    beside = Path(sys.executable).parent / "gguf-new-metadata"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("gguf-new-metadata")
    return [found] if found else [sys.executable, "-m", "gguf.scripts.gguf_new_metadata"]


# ---------------------------------------------------------------------------------------------
# Machine and versions


def machine_info(folder: Path) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    fstype = options = ""
    try:
        out = subprocess.run(
            ["findmnt", "-no", "FSTYPE,OPTIONS", "-T", str(folder)], capture_output=True, text=True, check=True
        )
        fstype, _, options = out.stdout.strip().partition(" ")
        options = options.strip()
    except (OSError, subprocess.CalledProcessError):
        out = subprocess.run(["stat", "-f", "-c", "%T", str(folder)], capture_output=True, text=True, check=False)
        fstype = out.stdout.strip()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cpu": cpu,
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "filesystem": fstype,
        "mount_options": options,
        "folder": str(folder),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    cp = subprocess.run(["cp", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "python": platform.python_version(),
        "yarn-cli": pkg("yarn-cli"),
        "gguf": pkg("gguf"),
        "numpy": pkg("numpy"),
        "cp": cp[0] if cp else "?",
    }


# ---------------------------------------------------------------------------------------------
# The benchmark


def fmt_runs(runs: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in runs)


def bench_copy(args: argparse.Namespace, folder: Path, model: Path, gnu_time: bool) -> dict[str, Any]:
    yarn = yarn_cli_exe()
    out_cp, out_cv, out_cps = folder / "out-cp.gguf", folder / "out-convert.gguf", folder / "out-cp-sync.gguf"
    commands: dict[str, list[str]] = {
        "cp": ["cp", str(model), str(out_cp)],
        "yarn-cli convert": [yarn, "convert", str(model), str(out_cv), "--factor", str(FACTOR), "--quiet", "--force"],
    }
    if not args.no_cp_sync:
        commands["cp + sync"] = ["sh", "-c", 'cp "$1" "$2" && sync', "sh", str(model), str(out_cps)]
    results: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "rss": []} for name in commands}
    problems: list[str] | None = None
    for i in range(args.runs):
        for name, cmd in commands.items():
            remove(out_cp, out_cv, out_cps)
            sync()
            if args.cold:
                evict(model)
            seconds, rss = run_timed(cmd, gnu_time=gnu_time)
            results[name]["seconds"].append(seconds)
            results[name]["rss"].append(rss)
            print(f"  run {i + 1}/{args.runs} {name:18} {seconds:7.2f} s  {rss / 1e6:7.1f} MB", flush=True)
            if name == "yarn-cli convert" and problems is None:  # check the output once, untimed
                problems = verify_conversion(model, out_cv)
    remove(out_cp, out_cv, out_cps)
    summary: dict[str, Any] = {"runs": results, "median_s": {}, "peak_rss_bytes": {}}
    for name, r in results.items():
        summary["median_s"][name] = statistics.median(r["seconds"])
        summary["peak_rss_bytes"][name] = max(r["rss"])
    summary["verify_problems"] = problems
    return summary


def bench_small_rss(args: argparse.Namespace, folder: Path, gnu_time: bool) -> dict[str, Any]:
    small = write_gguf(folder / "small.gguf", _tensor_sizes(int(args.small_gib * GIB)))[0]
    check_gguf(small)
    out = folder / "small-out.gguf"
    rss, secs = [], []
    for _ in range(args.runs):
        remove(out)
        sync()
        s, r = run_timed(
            [yarn_cli_exe(), "convert", str(small), str(out), "--factor", str(FACTOR), "--quiet", "--force"],
            gnu_time=gnu_time,
        )
        rss.append(r)
        secs.append(s)
    size = small.stat().st_size
    remove(out, small)
    return {"file_bytes": size, "rss": rss, "seconds": secs, "peak_rss_bytes": max(rss)}


def bench_gguf_new_metadata(args: argparse.Namespace, folder: Path, model: Path, gnu_time: bool) -> dict[str, Any]:
    out = folder / "out-gguf-new-metadata.gguf"
    cmd = [*gguf_new_metadata_cmd(), str(model), str(out), "--general-description", "yarn-cli benchmark", "--force"]
    remove(out)
    sync()
    if args.cold:
        evict(model)
    try:
        seconds, rss = run_timed(cmd, gnu_time=gnu_time)
    except (OSError, RuntimeError) as exc:
        return {"command": cmd, "error": str(exc)}
    ok = out.exists() and out.stat().st_size >= model.stat().st_size
    remove(out)
    sync()
    return {"command": cmd, "seconds": seconds, "peak_rss_bytes": rss, "output_ok": ok}


def bench_split(args: argparse.Namespace, folder: Path, later_gib: float, gnu_time: bool) -> dict[str, Any]:
    sub = folder / f"split-{later_gib:g}"
    sub.mkdir()
    per_split = int(later_gib * GIB / args.split_parts)
    per_split -= per_split % ROW_BYTES
    tensors = [16 * MIB] + [per_split] * args.split_parts  # one tensor a split: the first is small
    paths = write_gguf(sub / "model.gguf", tensors, split_max_tensors=1)
    for p in paths:
        check_gguf(p, expect_tensors=1)
    reader = GGUFReader(paths[0])
    split_keys = {k: field_value(reader, k) for k in ("split.no", "split.count", "split.tensors.count")}
    del reader
    cmd = [yarn_cli_exe(), "convert", str(paths[0]), "--factor", str(FACTOR), "--quiet", "--force"]
    outputs = [p.with_name(p.name.replace("model-", "model.yarn-4x-", 1)) for p in paths]
    seconds, rss = [], []
    for _ in range(args.runs):
        remove(*outputs)
        sync()
        if args.cold:
            for p in paths:
                evict(p)
        s, r = run_timed(cmd, gnu_time=gnu_time)
        seconds.append(s)
        rss.append(r)
    missing = [o.name for o in outputs if not o.exists()]
    linked = [o.name for o, p in zip(outputs[1:], paths[1:], strict=True) if o.exists() and os.path.samefile(o, p)]
    result = {
        "later_splits_bytes": sum(p.stat().st_size for p in paths[1:]),
        "first_split_bytes": paths[0].stat().st_size,
        "splits": len(paths),
        "split_keys": split_keys,
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "peak_rss_bytes": max(rss),
        "missing_outputs": missing,
        "hard_linked": len(linked),
    }
    shutil.rmtree(sub)
    sync()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="convert_bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=1.5, help="size of the synthetic model (default 1.5)")
    parser.add_argument("--small-gib", type=float, default=0.1, help="size of the small model for RSS (default 0.1)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="put the work folder here (default: the temp dir)")
    parser.add_argument(
        "--split-gib",
        default="0.2,1.5",
        help="total sizes of the later splits of the split models, comma-separated (default 0.2,1.5)",
    )
    parser.add_argument("--split-parts", type=int, default=2, help="later splits per split model (default 2)")
    parser.add_argument("--no-cp-sync", action="store_true", help="do not time 'cp && sync'")
    parser.add_argument("--no-split", action="store_true", help="skip the split-model benchmark")
    parser.add_argument("--no-gguf-new-metadata", action="store_true", help="skip the gguf-new-metadata baseline")
    parser.add_argument(
        "--cold", action="store_true", help="drop the input's pages from the page cache before every run"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the raw numbers here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="yarn-convert-bench-", dir=args.dir))
    gnu_time = has_gnu_time()
    report: dict[str, Any] = {
        "machine": machine_info(folder),
        "versions": versions(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rss_source": "GNU time %M" if gnu_time else "os.wait4 ru_maxrss",
    }
    m, v = report["machine"], report["versions"]
    print(f"machine: {m['cpu']}, {m['nproc']} CPUs (nproc), {m['ram_gib']} GiB RAM, Linux {m['kernel']}")
    print(f"folder:  {folder} on {m['filesystem']} ({m['mount_options']})")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(
        f"peak RSS from {report['rss_source']}; page cache: {'input evicted before each run' if args.cold else 'warm'}"
    )
    try:
        t0 = time.perf_counter()
        model = write_gguf(folder / "model.gguf", _tensor_sizes(int(args.size_gib * GIB)))[0]
        reader = check_gguf(model)
        n_tensors = len(reader.tensors)
        del reader
        sync()
        size = model.stat().st_size
        report["model"] = {"bytes": size, "tensors": n_tensors, "write_seconds": time.perf_counter() - t0}
        print(f"\nmodel: {size / GIB:.3f} GiB ({size:,} bytes), {n_tensors} F16 tensors, GGUFReader ok")

        print(f"\ncp vs yarn-cli convert, alternating, {args.runs} runs each:")
        copy = bench_copy(args, folder, model, gnu_time)
        report["copy"] = copy
        if not args.no_gguf_new_metadata:
            print("gguf-new-metadata (1 run) ...", flush=True)
            report["gguf_new_metadata"] = bench_gguf_new_metadata(args, folder, model, gnu_time)
        remove(model)
        sync()
        print(f"convert peak RSS on a {args.small_gib:g} GiB model ...", flush=True)
        report["small"] = bench_small_rss(args, folder, gnu_time)
        if not args.no_split:
            report["split"] = []
            for later in (float(x) for x in args.split_gib.split(",")):
                print(f"split model, later splits {later:g} GiB ...", flush=True)
                report["split"].append(bench_split(args, folder, later, gnu_time))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print_results(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nraw numbers written to {args.json}")


def print_results(report: dict[str, Any], args: argparse.Namespace) -> None:
    copy = report["copy"]
    size_gib = report["model"]["bytes"] / GIB
    print(f"\nResults ({size_gib:.2f} GiB model, median of {args.runs} alternating runs; peak RSS = max over runs)")
    print(f"{'command':28} {'median s':>9} {'GB/s':>6}  {'peak RSS':>9}  runs (s)")
    for name, median in copy["median_s"].items():
        rate = report["model"]["bytes"] / median / 1e9
        rss = copy["peak_rss_bytes"][name] / 1e6
        print(f"{name:28} {median:9.2f} {rate:6.2f}  {rss:6.0f} MB  {fmt_runs(copy['runs'][name]['seconds'])}")
    g = report.get("gguf_new_metadata")
    if g and "error" not in g:
        rate = report["model"]["bytes"] / g["seconds"] / 1e9
        print(f"{'gguf-new-metadata (1 run)':28} {g['seconds']:9.2f} {rate:6.2f}  {g['peak_rss_bytes'] / 1e6:6.0f} MB")
    elif g:
        print(f"gguf-new-metadata failed: {g['error']}")
    med = copy["median_s"]
    ratio = med["yarn-cli convert"] / med["cp"]
    verdict = "meets" if ratio <= 1.10 else "MISSES"
    print(f"\nratio convert / cp:          {ratio:.2f}  ({verdict} the target <= 1.10)")
    if "cp + sync" in med:
        print(f"ratio convert / (cp + sync): {med['yarn-cli convert'] / med['cp + sync']:.2f}")
    if g and "error" not in g:
        print(f"ratio gguf-new-metadata / cp: {g['seconds'] / med['cp']:.2f}")
    big_rss = copy["peak_rss_bytes"]["yarn-cli convert"]
    small = report["small"]
    verdict = "meets" if max(big_rss, small["peak_rss_bytes"]) <= 150e6 else "MISSES"
    print(
        f"convert peak RSS: {big_rss / 1e6:.0f} MB at {size_gib:.2f} GiB, {small['peak_rss_bytes'] / 1e6:.0f} MB "
        f"at {small['file_bytes'] / GIB:.2f} GiB ({verdict} the target <= 150 MB)"
    )
    if copy["verify_problems"]:
        print("CONVERTED FILE WRONG: " + "; ".join(copy["verify_problems"]))
    else:
        print("converted file checked: rope keys set, tensor data byte-identical")
    for s in report.get("split", []):
        links = f"{s['hard_linked']}/{s['splits'] - 1} later splits hard-linked"
        extra = f"; MISSING outputs: {', '.join(s['missing_outputs'])}" if s["missing_outputs"] else ""
        print(
            f"split model: first split {s['first_split_bytes'] / MIB:.0f} MiB + {s['splits'] - 1} later splits "
            f"{s['later_splits_bytes'] / GIB:.2f} GiB: convert median {s['median_s']:.2f} s "
            f"(runs {fmt_runs(s['seconds'])}), peak RSS {s['peak_rss_bytes'] / 1e6:.0f} MB, {links}{extra}"
        )


if __name__ == "__main__":
    main()
