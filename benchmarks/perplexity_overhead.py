"""Perplexity: where the time goes (llama_decode, scoring the logits, the rest), and the scoring
against the whole-batch numpy log-softmax yarn-cli used before.

Part 1 scores the same window with both scorers per round (alternating which goes first) on one
loaded model, over --rounds; prints the medians of the scoring time per batch, the ratio, and
whether the figures agree (relative 1e-6). Part 2 runs ``run_perplexity`` as the CLI does and
prints its split. Targets: on the CPU, time outside llama_decode <= 5% of the run; on a GPU,
evaluated tokens/s at least half of passkey's on the same model and lengths.

    python benchmarks/perplexity_overhead.py --text ../shared/data/pride-and-prejudice.txt \
        [--model M.gguf] [--window 4k] [--contexts 2k,4k] [--compare none,yarn:2] [--rounds 3] [-ngl N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import yarn_cli.llama  # noqa: F401  # isort: skip  (llama.cpp's libraries before numpy's)

import numpy as np

from yarn_cli.evals.lengths import parse_length, parse_lengths
from yarn_cli.evals.perplexity import PerplexitySettings, read_text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.llama.evaluation import EvaluationTime, negative_log_likelihoods, vocabulary
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants


class WholeBatchScorer(LogitScorer):
    """The scoring before: whole-batch numpy temporaries, one thread."""

    def score(self, logits: np.ndarray, targets: np.ndarray, out: np.ndarray) -> None:
        top = logits.max(axis=1)
        log_z = top + np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64))
        out[:] = log_z - logits[np.arange(len(logits)), targets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, type=Path)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--window", default="4k", help="tokens scored per round in part 1")
    parser.add_argument("--contexts", default="2k,4k", help="part 2's perplexity contexts")
    parser.add_argument("--compare", default="none,yarn:2", help="part 2's variants")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-ngl", "--gpu-layers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    model = open_model(args.model)
    text = read_text(args.text)
    window = parse_length(args.window)
    with vocabulary(model) as vocab:
        tokens = vocab.tokenize(text.content, add_bos=vocab.add_bos)[:window]
    llm, effective = load_model(model, LoadOptions(n_ctx=window, n_gpu_layers=args.gpu_layers, n_threads=args.threads))
    workers = llm.context_params.n_threads_batch
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {effective.describe()}")
    print(f"part 1: {len(tokens):,} tokens in batches of {llm.n_batch}, {workers} scoring threads\n")
    scorers = {"blocks": LogitScorer(llm.n_vocab(), workers), "whole-batch": WholeBatchScorer(llm.n_vocab())}
    scoring: dict[str, list[float]] = {name: [] for name in scorers}
    decode: dict[str, list[float]] = {name: [] for name in scorers}
    figures: dict[str, np.ndarray] = {}
    batches = -(-len(tokens) // llm.n_batch)
    for r in range(args.rounds):
        for name in list(scorers) if r % 2 == 0 else list(scorers)[::-1]:
            timings = EvaluationTime()
            figures[name] = negative_log_likelihoods(llm, tokens, scorer=scorers[name], timings=timings)
            scoring[name].append(timings.scoring / batches)
            decode[name].append(timings.decode / batches)
            print(
                f"round {r + 1}: {name:11} decode {timings.decode:6.2f} s, scoring {timings.scoring:6.3f} s",
                flush=True,
            )
    for scorer in scorers.values():
        scorer.close()
    llm.close()
    worst = float(np.max(np.abs(figures["blocks"] / figures["whole-batch"] - 1)))
    median = {name: statistics.median(v) * 1000 for name, v in scoring.items()}
    print(
        f"\nscoring per batch (median): blocks {median['blocks']:.1f} ms, whole-batch {median['whole-batch']:.1f} ms "
        f"({median['whole-batch'] / median['blocks']:.2f}x); llama_decode per batch "
        f"{statistics.median(decode['blocks']) * 1000:.1f} ms; largest relative difference {worst:.1e}"
    )

    variants = parse_variants(args.compare, model.rope)
    settings = PerplexitySettings(contexts=parse_lengths(args.contexts, "--contexts"))
    options = LoadOptions(n_gpu_layers=args.gpu_layers, n_threads=args.threads)
    started = time.perf_counter()
    with LlamaBackend(model, variants, options) as backend:
        run = run_perplexity(backend, text, settings)
    wall = time.perf_counter() - started
    decode_seconds, scoring_seconds = run.timings["decode"], run.timings["scoring"]
    rest = wall - decode_seconds - scoring_seconds
    print(
        f"\npart 2: perplexity {args.contexts} x {args.compare}, {run.evaluated_tokens:,} tokens in {wall:.1f} s "
        f"({run.evaluated_tokens / wall:,.0f} tokens/s)\n"
        f"  llama_decode {decode_seconds:7.2f} s  {decode_seconds / wall:6.1%}\n"
        f"  scoring      {scoring_seconds:7.2f} s  {scoring_seconds / wall:6.1%}\n"
        f"  the rest     {rest:7.2f} s  {rest / wall:6.1%}  (loads, tokenizing, filling batches)\n"
        f"  outside llama_decode: {(wall - decode_seconds) / wall:.1%}"
    )


if __name__ == "__main__":
    main()
