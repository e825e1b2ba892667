"""Passkey with and without KV-cache reuse: evaluated tokens, wall time, identical answers.

Runs the same seeded trials (default: 10 at each of 1k, 2k, 4k tokens) twice per seed,
reuse first then --no-reuse, one round per seed in --seeds, and prints each seed's ratios and
their medians.
Targets: >= 1.7x fewer evaluated tokens and >= 1.5x less wall time with reuse.

    python benchmarks/passkey_reuse.py [--model M.gguf] [--lengths 1k,2k,4k] [--trials 10] [--seeds 0,1,2,3,4]

How much a prompt can reuse depends on where the keys were drawn (only the filler before a
key is shared), so --simulate-seeds N also prints, from the tokenizer alone, the prompt
tokens that reuse would evaluate for seeds 0..N-1: the spread of the ratio over draws.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from yarn_cli.evals.lengths import parse_lengths
from yarn_cli.evals.passkey import PasskeySettings, PromptBuilder, plan_trials, reuse_order
from yarn_cli.evals.passkey_run import run_passkey
from yarn_cli.llama.evaluation import vocabulary
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--lengths", default="1k,2k,4k")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", default="0", help="comma-separated: one round per seed (default 0)")
    parser.add_argument("--simulate-seeds", type=int, default=0, metavar="N")
    parser.add_argument("--simulate-only", action="store_true")
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    lengths = parse_lengths(args.lengths)
    if args.simulate_seeds:
        simulate(args.model, lengths, args.trials, args.simulate_seeds)
    if args.simulate_only:
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []  # per seed: tokens and seconds without and with reuse, identical answers, correct
    for seed in seeds:
        runs = {}
        for reuse in (True, False):
            settings = PasskeySettings(lengths=lengths, trials=args.trials, seed=seed)
            start = time.perf_counter()
            model = open_model(args.model)
            with LlamaBackend(model, parse_variants("as-is", model.rope), reuse=reuse) as backend:
                results = run_passkey(backend, settings).results
            seconds = time.perf_counter() - start
            answers = {(t.length, t.index): (t.output, t.correct) for t in results}
            runs[reuse] = (seconds, sum(t.evaluated_tokens for t in results), answers)
            label = "reuse" if reuse else "no-reuse"
            print(f"seed {seed}: {label:9} {seconds:8.1f} s, {runs[reuse][1]:,} tokens evaluated", flush=True)
        (s_on, n_on, a_on), (s_off, n_off, a_off) = runs[True], runs[False]
        rows.append((seed, n_off, n_on, s_off, s_on, a_on == a_off, sum(ok for _, ok in a_on.values()), len(a_on)))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}")
    print(f"lengths {args.lengths}, {args.trials} trials each, one round per seed\n")
    columns = ["seed", "tokens --no-reuse", "tokens reuse", "fewer", "wall --no-reuse", "wall reuse", "less"]
    columns += ["answers", "correct"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for seed, n_off, n_on, s_off, s_on, same, correct, total in rows:
        print(
            f"| {seed} | {n_off:,} | {n_on:,} | {n_off / n_on:.2f}x | {s_off:.1f} s | {s_on:.1f} s | "
            f"{s_off / s_on:.2f}x | {'identical' if same else 'DIFFERENT'} | {correct}/{total} |"
        )
    token_ratio = statistics.median(r[1] / r[2] for r in rows)
    wall_ratio = statistics.median(r[3] / r[4] for r in rows)
    print(f"\nmedian over {len(rows)} seeds: {token_ratio:.2f}x fewer tokens, {wall_ratio:.2f}x less wall time")
    print(f"identical answers in every seed: {all(r[5] for r in rows)}")


def simulate(model: str, lengths: list[int], trials: int, seeds: int) -> None:
    """Prompt tokens evaluated with and without reuse, per seed, as llama-cpp-python's prefix match does it."""
    import llama_cpp

    with vocabulary(open_model(model)) as vocab:
        builder = PromptBuilder(lambda text: vocab.tokenize(text, add_bos=True))
        prompts = {seed: [(spec, builder.build(spec)) for spec in plan_trials(lengths, trials, None, seed)]
                   for seed in range(seeds)}  # fmt: skip
    ratios = []
    for seed in range(seeds):
        ordered = reuse_order(prompts[seed])
        scratch = sum(len(p.tokens) for _, p in ordered)
        reused, previous = 0, []
        for _, prompt in ordered:
            # generate() matches all but the last prompt token, which it evaluates again for its logits.
            reused += len(prompt.tokens) - llama_cpp.Llama.longest_token_prefix(previous, prompt.tokens[:-1])
            previous = prompt.tokens
        ratios.append(scratch / reused)
        print(f"seed {seed:3}: prompt tokens {scratch:,} -> {reused:,} ({ratios[-1]:.2f}x fewer)", flush=True)
    ratios.sort()
    print(
        f"\n{seeds} seeds: ratio min {ratios[0]:.2f}, median {statistics.median(ratios):.2f}, "
        f"mean {statistics.mean(ratios):.2f}, max {ratios[-1]:.2f}; "
        f">= 1.7x in {sum(r >= 1.7 for r in ratios)} of {seeds}\n"
    )


if __name__ == "__main__":
    main()
