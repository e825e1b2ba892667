"""perplexity --reference: the KL divergence against scoring the same variants without it.

Per round (alternating which goes first): the variants scored alone (their perplexities only), then
with the reference (the same perplexities, and each variant's KL and top-1 agreement, both models
loaded at once). Prints the medians, the ratio, and whether the perplexities agree.

    python benchmarks/kl_reference.py --text ../shared/data/pride-and-prejudice.txt \
        [--model M.gguf] [--contexts 2k] [--compare none,yarn:2] [--reference none] [--rounds 3]
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
    parser.add_argument("--contexts", default="2k")
    parser.add_argument("--compare", default="none,yarn:2")
    parser.add_argument("--reference", default="none")
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
    kl: dict[tuple[str, int], tuple[float | None, float | None]] = {}
    for r in range(args.rounds):
        for compared in (True, False) if r % 2 == 0 else (False, True):
            settings = PerplexitySettings(contexts=contexts, reference=args.reference if compared else None)
            start = time.perf_counter()
            with LlamaBackend(model, variants, LoadOptions(n_threads=args.threads)) as backend:
                run = run_perplexity(backend, text, settings)
            seconds[compared].append(time.perf_counter() - start)
            figures[compared] = {(x.variant, x.context): x.ppl for x in run.results}
            if compared:
                kl = {(x.variant, x.context): (x.kl_divergence, x.top1_agreement) for x in run.results}
            label = "reference" if compared else "alone"
            print(f"round {r + 1}: {label:9} {seconds[compared][-1]:7.1f} s, {run.evaluated_tokens:,} tokens evaluated",
                  flush=True)  # fmt: skip
    worst = max(abs(figures[True][k] / figures[False][k] - 1) for k in figures[False])
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"model {model.path.name}, contexts {args.contexts}, variants {args.compare}, reference {args.reference}, "
          f"{args.rounds} round(s)")  # fmt: skip
    for key, ppl in figures[False].items():
        divergence, top1 = kl[key]
        extra = f", KL {divergence:.4f}, top-1 {top1:.1%}" if divergence is not None and top1 is not None else ""
        print(f"  {key[0]} @ {key[1]:>6}: ppl {ppl:.4f} alone, {figures[True][key]:.4f} with the reference{extra}")
    print(f"largest relative difference in perplexity between the two: {worst:.2e}")
    ratio = median[True] / median[False]
    print(f"alone: {median[False]:.1f} s; with --reference: {median[True]:.1f} s; {ratio:.2f}x the time")


if __name__ == "__main__":
    main()
