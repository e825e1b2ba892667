"""How safely a greedy answer holds on other machines: the top-2 logit gap along the whole reply.

A greedy reply is the same on every CPU and GPU only if no step is a near-tie: a different
summation order (threads, batch size, flash attention, AVX2 against AVX-512) moves logits by
small amounts and can flip a close call, after which the reply goes elsewhere. For each
candidate prompt this decodes greedily through the model's chat template, as ``yarn-cli chat``
does, under several thread counts, batch sizes and flash attention on and off, on the
embedded SmolLM2 and on its YaRN x2 conversion, and prints the reply and the smallest gap
between the best and second-best logit met on the way (in logits; larger is safer).

    python benchmarks/demo_prompt_margin.py [--tokens 48]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
from pathlib import Path

import llama_cpp
import numpy as np

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.default_model import default_model_path
from yarn_cli.llama.session import ChatSession
from yarn_cli.sampling import Sampling

PROMPTS = [
    "What is the capital of France?",
    "What is the capital of France? Answer in one word.",
    "What is the capital of France? Reply with the name of the city only.",
    "Complete the sentence: The capital of France is",
    "Which city is the capital of France?",
    "What is the opposite of hot? Answer in one word.",
    "Translate 'bonjour' into English. Answer in one word.",
    "Which number is larger, 3 or 7? Answer with the number only.",
    "Is the sun a star? Answer yes or no.",
    "What is the capital of Italy? Answer in one word.",
    "What is the capital of Japan? Answer in one word.",
]
CONFIGS = list(itertools.product((1, 2), (512, 16), (False, True)))  # threads, n_batch, flash attention


def greedy(llm: llama_cpp.Llama, prompt: str, max_tokens: int) -> tuple[str, float]:
    session = ChatSession(llm, Sampling(temp=0.0))
    tokens, _ = session.prompt_tokens([{"role": "user", "content": prompt}])
    eos = llm.token_eos()
    end_of_turn = {t for t in (eos, *llm.tokenize(b"<|im_end|>", add_bos=False, special=True)) if t >= 0}
    llm.reset()
    llm.eval(tokens)
    out: list[int] = []
    smallest = float("inf")
    for _ in range(max_tokens):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        second, first = np.partition(logits, -2)[-2:]
        smallest = min(smallest, float(first - second))
        token = int(np.argmax(logits))
        if token in end_of_turn:
            break
        out.append(token)
        llm.eval([token])
    return llm.detokenize(out).decode("utf-8", "replace"), smallest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48, help="longest reply followed")
    args = parser.parse_args()
    original = default_model_path()
    with tempfile.TemporaryDirectory() as folder:
        converted = convert_file(original, ConvertRequest(factor=2.0), output=Path(folder) / "x2.gguf")
        files = {"original": original, "yarn x2": converted.outputs[0].path}
        rows: dict[str, list[tuple[str, str, float]]] = {p: [] for p in PROMPTS}
        for (name, path), (threads, batch, flash) in itertools.product(files.items(), CONFIGS):
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=1024, n_batch=batch, n_ubatch=batch, n_threads=threads,
                n_threads_batch=threads, flash_attn=flash, verbose=False,
            )  # fmt: skip
            for prompt in PROMPTS:
                reply, gap = greedy(llm, prompt, args.tokens)
                rows[prompt].append((f"{name}, -t {threads}, batch {batch}, fa {'on' if flash else 'off'}", reply, gap))
            llm.close()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, llama-cpp-python {llama_cpp.__version__}")
    for prompt, results in rows.items():
        replies = {r for _, r, _ in results}
        print(f"\n{prompt!r}: smallest top-2 gap {min(g for _, _, g in results):.3f}, "
              f"{len(replies)} distinct repl{'y' if len(replies) == 1 else 'ies'}")  # fmt: skip
        for reply in sorted(replies):
            where = [c for c, r, _ in results if r == reply]
            print(f"  {len(where):2} configs: {reply[:100]!r}")
        worst = min(results, key=lambda r: r[2])
        print(f"  smallest gap under: {worst[0]}")


if __name__ == "__main__":
    main()
