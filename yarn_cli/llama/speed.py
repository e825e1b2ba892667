"""How fast llama.cpp runs a model on this machine: a short measurement, for the estimate before a long run.

A measurement of a few seconds at the start of a context gives a prompt token's and a generated
token's cost there; the model's shape (``Model.compute``) says how they grow with the tokens
before them, which so short a measurement cannot see. Attention's flops run faster than the
quantized weights' here: SmolLM2-135M on 2 cores took 3.7, 3.9, 4.2, 4.9 and 6.7 ms per token over
prompts of 512, 1k, 2k, 4k and 8k tokens from scratch, a growth of 0.49x, 0.56x and 0.63x what
the flops alone say from 2k to 8k; ``ATTENTION_EFFICIENCY`` takes 0.6.
"""

from __future__ import annotations

import time

import llama_cpp

from yarn_cli.backend import Speed
from yarn_cli.model import Model

# A batch is measured again, four times larger, until it takes this long (or reaches n_batch or the budget).
ENOUGH_SECONDS = 1.0
FIRST_BATCH = 16
WARM_UP = 8  # tokens evaluated first: the weights paged in, llama.cpp's buffers allocated
GENERATED = 4
# Attention's flops per second over the weights' (see above): the shape's growth is scaled by it.
ATTENTION_EFFICIENCY = 0.6
# Any text will do: only its number of tokens matters.
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 64


def measure_speed(llm: llama_cpp.Llama, model: Model, budget_tokens: int) -> Speed:
    """Time a prompt batch and a few generated tokens at the start of ``llm``'s context (emptied again after).

    ``budget_tokens``: the most prompt tokens to spend (besides the warm-up and the generated ones).
    """
    compute = model.compute
    tokens = llm.tokenize(FILLER.encode("utf-8"), add_bos=False, special=False)
    limit = max(FIRST_BATCH, min(budget_tokens, int(llm.n_batch), len(tokens) - GENERATED - 1, llm.n_ctx() // 2))
    _timed(llm, tokens[:WARM_UP])
    size = FIRST_BATCH
    seconds = _timed(llm, tokens[:size])
    while seconds < ENOUGH_SECONDS and size < limit:
        size = min(4 * size, limit)
        seconds = _timed(llm, tokens[:size])
    # the batch's own attention grew its cost a little: what a token costs at the very start
    growth = compute.prompt_growth * ATTENTION_EFFICIENCY
    prompt_token = seconds / (size * (1 + growth * size / 2))
    llm.reset()
    llm.eval(tokens[:1])
    start = time.perf_counter()
    for token in tokens[1 : 1 + GENERATED]:
        llm.eval([token])  # one token at a time, as a reply is generated
    generated = (time.perf_counter() - start) / GENERATED
    llm.reset()
    kv_bytes = model.shape.kv_cache_bytes(1) or 0
    return Speed(
        prompt_token=prompt_token,
        generated_token=generated,
        prompt_growth=growth,
        generated_growth=kv_bytes / compute.weight_bytes if compute.weight_bytes else 0.0,
        scoring_factor=compute.scoring_factor,
        measured=f"{size} prompt tokens in {seconds:.2f} s, {GENERATED} generated in {generated * GENERATED:.2f} s",
    )


def _timed(llm: llama_cpp.Llama, tokens: list[int]) -> float:
    """Seconds to evaluate ``tokens`` from an empty context."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    return time.perf_counter() - start
