"""Default CPU threads: llama-cpp-python's (half the logical CPUs) against yarn-cli's (physical cores).

Loads the model with each default in turn, alternating, and times the same greedy completion
(prompt of --prompt-words words, -n generated tokens). Speeds are llama.cpp's own counters.
Prints the medians and the ratio yarn-cli / llama-cpp-python.

    python benchmarks/default_threads.py [--runs 5] [--model M.gguf] [--prompt-words 300] [-n 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics

import llama_cpp
from chat_speed import prompt_text  # the same prompt as the chat benchmark

from yarn_cli.llama.threads import default_threads, physical_cores, usable_cpus


def measure(model: str, prompt: str, n_predict: int, threads: tuple[int, int]) -> tuple[float, float, str]:
    """Prompt and generation tokens/s with these (generation, batch) threads, and the reply."""
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=threads[0], n_threads_batch=threads[1], verbose=False)
    try:
        llama_cpp.llama_perf_context_reset(llm.ctx)
        out = llm.create_completion(prompt, max_tokens=n_predict, temperature=0.0, top_k=1)
        perf = llama_cpp.llama_perf_context(llm.ctx)
        return perf.n_p_eval / perf.t_p_eval_ms * 1000, perf.n_eval / perf.t_eval_ms * 1000, out["choices"][0]["text"]
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("-n", type=int, default=64)
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    # llama-cpp-python's defaults when n_threads / n_threads_batch are left out.
    cpus = multiprocessing.cpu_count()
    sides = {"llama-cpp-python": (max(cpus // 2, 1), cpus), "yarn-cli": default_threads()}
    prompt = prompt_text(args.prompt_words)
    results: dict[str, list[tuple[float, float, str]]] = {name: [] for name in sides}
    for r in range(args.runs):
        for name, threads in sides.items():
            results[name].append(measure(args.model, prompt, args.n, threads))
            pp, tg, _ = results[name][-1]
            print(f"round {r + 1}: {name:17} {pp:7.1f} prompt tokens/s, {tg:6.1f} generated tokens/s", flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} logical CPUs, {usable_cpus()} usable, "
          f"{physical_cores()} physical cores, Linux {platform.release()}")  # fmt: skip
    for name, threads in sides.items():
        pp = statistics.median(x[0] for x in results[name])
        tg = statistics.median(x[1] for x in results[name])
        print(f"{name:17} threads {threads[0]}/{threads[1]}: prompt {pp:7.1f} tokens/s, generation {tg:6.1f} tokens/s")
    ratio = {
        i: statistics.median(a[i] / b[i] for a, b in zip(results["yarn-cli"], results["llama-cpp-python"], strict=True))
        for i in (0, 1)
    }
    print(f"ratio yarn-cli / llama-cpp-python: prompt {ratio[0]:.2f}x, generation {ratio[1]:.2f}x")
    same = {x[2] for xs in results.values() for x in xs}
    print(f"same reply every run: {len(same) == 1}")


if __name__ == "__main__":
    main()
