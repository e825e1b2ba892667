"""Perplexity: one nested pass per chunk against a separate pass per context.

The same text, contexts and variant, scored both ways per round (alternating which goes
first), over --rounds; prints the medians, the ratio, and whether the figures agree.
Target: >= 1.8x less time for contexts 2k..16k.

    python benchmarks/perplexity_nesting.py --text ../shared/data/pride-and-prejudice.txt \
        [--model M.gguf] [--contexts 2k,4k,8k,12k,16k] [--compare yarn:2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from yarn_cli.evals.lengths import parse_lengths
from yarn_cli.evals.perplexity import PerplexitySettings, read_text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, type=Path)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--contexts", default="2k,4k,8k,12k,16k")
    parser.add_argument("--compare", default="yarn:2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    model = open_model(args.model)
    variants = parse_variants(args.compare, model.rope)
    contexts = parse_lengths(args.contexts, "--contexts")
    text = read_text(args.text)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    figures: dict[bool, dict[tuple[str, int], float]] = {}
    for r in range(args.rounds):
        for nested in (True, False) if r % 2 == 0 else (False, True):
            settings = PerplexitySettings(contexts=contexts, nested=nested)
            start = time.perf_counter()
            with LlamaBackend(model, variants, LoadOptions(n_threads=args.threads)) as backend:
                run = run_perplexity(backend, text, settings)
            seconds[nested].append(time.perf_counter() - start)
            figures[nested] = {(x.variant, x.context): x.ppl for x in run.results}
            label = "nested" if nested else "separate"
            print(
                f"round {r + 1}: {label:8} {seconds[nested][-1]:7.1f} s, {run.evaluated_tokens:,} tokens evaluated",
                flush=True,
            )
    worst = max(abs(figures[True][k] / figures[False][k] - 1) for k in figures[True])
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"model {model.path.name}, contexts {args.contexts}, variants {args.compare}, {args.rounds} round(s)")
    for key, ppl in figures[True].items():
        print(f"  {key[0]} @ {key[1]:>6}: nested {ppl:.4f}, separate {figures[False][key]:.4f}")
    print(f"largest relative difference between the two: {worst:.2e}")
    ratio = median[False] / median[True]
    print(f"separate: {median[False]:.1f} s; nested: {median[True]:.1f} s; {ratio:.2f}x less time")


if __name__ == "__main__":
    main()
