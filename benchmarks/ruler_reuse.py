"""RULER with and without KV-prefix reuse: evaluated tokens, wall time, identical answers.

Runs the same seeded samples (default: niah_single_1, niah_multikey_2, vt and fwe at 1k and 2k
tokens, 2 samples each) with reuse and with ``--no-reuse``, each a fresh ``yarn-cli ruler`` process
(start-up, model load and prompt building included), alternating which goes first, ``--runs``
rounds. Reads each run's ``--json`` record and prints, per round and as medians: the tokens
llama.cpp evaluated (``evaluated_tokens``: prompt and answer tokens decoded) against the prompts'
own tokens (the sum of ``prompt_tokens``), the wall time of each, and whether every run gave the
same answers.

    python benchmarks/ruler_reuse.py [--model M.gguf] [--tasks niah_single_1,niah_multikey_2,vt,fwe]
                                     [--lengths 1k,2k] [--samples 2] [--runs 3] [--threads N]

How much a prompt can reuse is set by what it shares with the one before it (the samples run in
the order of their tokens): the template up to the first difference. RULER's prompts differ early
where a needle or a sample's own words come early, so the saving is smaller than passkey's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yarn_cli.default_model import default_model_path


def ruler(args: list[str], record: Path) -> tuple[float, dict[str, Any]]:
    record.unlink(missing_ok=True)  # an existing record would be resumed
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "yarn_cli", "ruler", *args, "--json", str(record)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    return seconds, json.loads(record.read_text())


def answers(record: dict[str, Any]) -> dict[tuple[str, int, int], tuple[str, float]]:
    return {(s["task"], s["length"], s["index"]): (s["output"], s["score"]) for s in record["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--tasks", default="niah_single_1,niah_multikey_2,vt,fwe")
    parser.add_argument("--lengths", default="1k,2k")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3, help="rounds, each running both (default 3)")
    parser.add_argument("--threads", type=int, help="-t for yarn-cli (default: its own)")
    args = parser.parse_args()
    model = args.model or str(default_model_path())
    common = [model, "--tasks", args.tasks, "--lengths", args.lengths, "--samples", str(args.samples),
              "--seed", str(args.seed)]  # fmt: skip
    if args.threads:
        common += ["-t", str(args.threads)]
    rows = []  # per round: (seconds, evaluated tokens) with and without reuse
    first: dict[tuple[str, int, int], tuple[str, float]] | None = None
    prompt_tokens = 0
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.runs):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            measured: dict[bool, tuple[float, int]] = {}
            for reuse in order:
                seconds, record = ruler(common + ([] if reuse else ["--no-reuse"]), Path(tmp) / "run.json")
                if record["settings"]["reuse"] != reuse:
                    raise SystemExit(f"the record says reuse={record['settings']['reuse']}, expected {reuse}")
                got = answers(record)
                first = first if first is not None else got
                identical = identical and got == first
                prompt_tokens = sum(s["prompt_tokens"] for s in record["samples"])
                measured[reuse] = (seconds, record["evaluated_tokens"])
                label = "reuse" if reuse else "no-reuse"
                print(f"round {round_ + 1}: {label:9} {seconds:7.1f} s, {record['evaluated_tokens']:,} tokens "
                      f"evaluated for {prompt_tokens:,} prompt tokens", flush=True)  # fmt: skip
            rows.append((measured[True], measured[False]))
    assert first is not None
    scores = [score for _, score in first.values()]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"tasks {args.tasks}, lengths {args.lengths}, {args.samples} samples each, seed {args.seed}: "
          f"{len(first)} samples, {prompt_tokens:,} prompt tokens\n")  # fmt: skip
    columns = ["round", "evaluated --no-reuse", "evaluated reuse", "fewer", "wall --no-reuse", "wall reuse", "less"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for i, ((s_on, n_on), (s_off, n_off)) in enumerate(rows, 1):
        print(f"| {i} | {n_off:,} | {n_on:,} | {n_off / n_on:.2f}x | {s_off:.1f} s | {s_on:.1f} s | "
              f"{s_off / s_on:.2f}x |")  # fmt: skip
    n_on = int(statistics.median(r[0][1] for r in rows))
    n_off = int(statistics.median(r[1][1] for r in rows))
    answer_tokens = n_off - prompt_tokens  # without reuse every prompt token is evaluated once
    print(
        f"\nevaluated / prompt tokens: --no-reuse {n_off / prompt_tokens:.3f}, reuse {n_on / prompt_tokens:.3f} "
        f"({answer_tokens:,} of the evaluated tokens are answers, the same both ways when the answers are)"
    )
    print(
        f"prompt tokens evaluated with reuse: {n_on - answer_tokens:,} of {prompt_tokens:,} "
        f"({(n_on - answer_tokens) / prompt_tokens:.1%})"
    )
    print(
        f"median over {len(rows)} rounds: {statistics.median(r[1][0] / r[0][0] for r in rows):.2f}x less wall time "
        f"(--no-reuse {statistics.median(r[1][0] for r in rows):.1f} s, "
        f"reuse {statistics.median(r[0][0] for r in rows):.1f} s)"
    )
    print(f"identical answers in every run: {identical}; mean score {sum(scores) / len(scores):.0%}")


if __name__ == "__main__":
    main()
