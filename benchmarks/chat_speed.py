"""yarn-cli chat against bare llama-cpp-python doing the same work: prompt and generation speed.

Both sides answer the same chat prompt with greedy decoding, in separate processes,
alternating (yarn-cli, bare, yarn-cli, ...). Speeds come from llama.cpp's own
performance counters on both sides, time to first token from a wall clock around
the streamed reply, and start-up (imports + model load) from the process start.
Prints the medians and the ratio yarn-cli / bare; the targets: speeds within 5%, and a one-shot's
wall time within 0.15 s of bare. Both sides offload the same layers (-ngl; default: all of them
where llama.cpp was built for a GPU, as yarn-cli does, else none).

``--startup`` measures what a short one-shot costs beyond bare llama-cpp-python: a one-line question,
8 tokens, a 512-token context, 15 pairs; the extra wall time is then almost all start-up (imports,
reading the header, the settings line) and exit. Both sides run with Python's bytecode cache, as
an installed package does (an environment that sets PYTHONDONTWRITEBYTECODE would otherwise make
yarn-cli compile its modules on every run).

    python benchmarks/chat_speed.py [--runs 5] [--model M.gguf] [--prompt-words 300] [-n 128] [-ngl N]
    python benchmarks/chat_speed.py --startup
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BARE = r"""
import json, sys, time
t0 = time.perf_counter()
import llama_cpp
model, prompt = sys.argv[1], sys.argv[2]
n_ctx, n_predict, threads, gpu_layers = (int(a) for a in sys.argv[3:7])
llm = llama_cpp.Llama(
    model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=gpu_layers, verbose=False
)
loaded = time.perf_counter()
llama_cpp.llama_perf_context_reset(llm.ctx)
start = time.perf_counter()
first = None
text = []
for chunk in llm.create_chat_completion(
    messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=n_predict, stream=True
):
    piece = chunk["choices"][0]["delta"].get("content")
    if piece:
        if first is None:
            first = time.perf_counter()
        text.append(piece)
perf = llama_cpp.llama_perf_context(llm.ctx)
print(json.dumps({
    "reply": "".join(text),
    "startup_s": loaded - t0,
    "first_token_ms": (first - start) * 1000,
    "prompt_tokens_per_s": perf.n_p_eval / perf.t_p_eval_ms * 1000,
    "generation_tokens_per_s": perf.n_eval / perf.t_eval_ms * 1000,
    "prompt_evaluated": perf.n_p_eval,
    "generated": perf.n_eval,
}))
"""


# The children write and use bytecode, as a user's installed yarn-cli does.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def prompt_text(words: int) -> str:
    if words == 0:
        return "What is the capital of France?"
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "pride-and-prejudice.txt"
    source = shared.read_text() if shared.exists() else "It is a truth universally acknowledged. " * 200
    body = " ".join(source.split()[2000 : 2000 + words])
    return f"Summarise this passage in a long paragraph:\n\n{body}"


def run_yarn(model: str, prompt: str, n_ctx: int, n_predict: int, threads: int, gpu_layers: int) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "yarn_cli", "chat", model, "-p", prompt, "--temp", "0", "--json",
         "-c", str(n_ctx), "-n", str(n_predict), "-t", str(threads), "-ngl", str(gpu_layers)],
        capture_output=True, text=True, check=True, env=CHILD_ENV,
    )  # fmt: skip
    wall = time.perf_counter() - start
    data = json.loads(out.stdout)
    return {
        "reply": data["reply"],
        "wall_s": wall,
        "first_token_ms": data["timings"]["first_token_ms"],
        "prompt_tokens_per_s": data["timings"]["prompt_tokens_per_s"],
        "generation_tokens_per_s": data["timings"]["generation_tokens_per_s"],
        "generated": data["completion_tokens"],
    }


def run_bare(model: str, prompt: str, n_ctx: int, n_predict: int, threads: int, gpu_layers: int) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BARE, model, prompt, str(n_ctx), str(n_predict), str(threads), str(gpu_layers)],
        capture_output=True, text=True, check=True, env=CHILD_ENV,
    )  # fmt: skip
    data = json.loads(out.stdout)
    data["wall_s"] = time.perf_counter() - start
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt-words", type=int, default=300)
    parser.add_argument("-n", "--n-predict", type=int, default=128)
    parser.add_argument("-c", "--ctx", type=int, default=2048)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-ngl", "--gpu-layers", type=int, default=None, help="default: all on a GPU build, else 0")
    parser.add_argument("--json", type=Path, help="write the raw runs here")
    parser.add_argument("--startup", action="store_true", help="a short one-shot: 15 pairs, -n 8, -c 512")
    args = parser.parse_args()
    if args.startup:
        args.runs, args.prompt_words, args.n_predict, args.ctx = 15, 0, 8, 512
    if args.gpu_layers is None:
        import llama_cpp

        args.gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    prompt = prompt_text(args.prompt_words)
    work = (args.model, prompt, args.ctx, args.n_predict, args.threads, args.gpu_layers)
    run_yarn(*work)  # warm the page cache
    runs: dict[str, list[dict[str, float]]] = {"yarn-cli": [], "bare": []}
    for i in range(args.runs):
        runs["yarn-cli"].append(run_yarn(*work))
        runs["bare"].append(run_bare(*work))
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    same = runs["yarn-cli"][0]["reply"] == runs["bare"][0]["reply"]
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, "
          f"threads {args.threads}, -ngl {args.gpu_layers}; model {Path(args.model).name}")  # fmt: skip
    print(f"same reply from both: {same}; generated tokens: {runs['yarn-cli'][0]['generated']}")
    print(f"{'metric':28} {'yarn-cli':>10} {'bare':>10} {'ratio':>7}")
    for metric, better in (
        ("prompt_tokens_per_s", "higher"),
        ("generation_tokens_per_s", "higher"),
        ("first_token_ms", "lower"),
        ("wall_s", "lower"),
    ):
        a = statistics.median(r[metric] for r in runs["yarn-cli"])
        b = statistics.median(r[metric] for r in runs["bare"])
        print(f"{metric:28} {a:10.2f} {b:10.2f} {a / b:7.3f}  ({better} is better)")
    walls = {side: statistics.median(r["wall_s"] for r in side_runs) for side, side_runs in runs.items()}
    extra = walls["yarn-cli"] - walls["bare"]
    print(f"yarn-cli's extra wall time: {extra:+.3f} s (target: at most 0.15 s)")
    paired = statistics.median(a["wall_s"] - b["wall_s"] for a, b in zip(runs["yarn-cli"], runs["bare"], strict=True))
    print(f"median of the paired differences: {paired:+.3f} s")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
