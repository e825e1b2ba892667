"""Passkey with and without KV-cache reuse: evaluated tokens, wall time, identical answers.

Runs the same seeded trials (default: 10 at each of 1k, 2k, 4k tokens) twice per round,
reuse first then --no-reuse, alternating over --rounds, and prints the medians and ratios.
Targets: >= 1.7x fewer evaluated tokens and >= 1.5x less wall time with reuse.

    python benchmarks/passkey_reuse.py [--model M.gguf] [--lengths 1k,2k,4k] [--trials 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from yarn_cli.lengths import parse_lengths
from yarn_cli.passkey import PasskeySettings, run_passkey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--lengths", default="1k,2k,4k")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    lengths = parse_lengths(args.lengths)
    runs: dict[bool, list[tuple[float, int, dict]]] = {True: [], False: []}
    for r in range(args.rounds):
        for reuse in (True, False):
            settings = PasskeySettings(lengths=lengths, trials=args.trials, seed=args.seed, reuse=reuse)
            start = time.perf_counter()
            results = run_passkey(args.model, settings)
            seconds = time.perf_counter() - start
            answers = {(t.length, t.index): (t.output, t.correct) for t in results}
            runs[reuse].append((seconds, sum(t.evaluated_tokens for t in results), answers))
            label = "reuse" if reuse else "no-reuse"
            print(f"round {r + 1}: {label:9} {seconds:8.1f} s, {runs[reuse][-1][1]:,} tokens evaluated", flush=True)
    same = all(a[2] == b[2] for a, b in zip(runs[True], runs[False], strict=True))
    accuracy = sum(ok for _, ok in runs[True][0][2].values()) / len(runs[True][0][2])
    wall = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
    tokens = {k: statistics.median(n for _, n, _ in v) for k, v in runs.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"lengths {args.lengths}, {args.trials} trials each, seed {args.seed}, {args.rounds} round(s)")
    print(f"identical answers with and without reuse: {same}; accuracy {accuracy:.0%}")
    print(f"evaluated tokens: {tokens[False]:,.0f} -> {tokens[True]:,.0f} ({tokens[False] / tokens[True]:.2f}x fewer)")
    print(f"wall time: {wall[False]:.1f} s -> {wall[True]:.1f} s ({wall[False] / wall[True]:.2f}x less)")


if __name__ == "__main__":
    main()
