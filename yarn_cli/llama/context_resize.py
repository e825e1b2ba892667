"""A loaded model given a context of another size, without loading the model again.

llama.cpp fixes a context's size when it is created, but a model can have any number of contexts:
a chat that outgrows its context gets a new one on the same model. Loading the model again, as a
change of RoPE scale must (``dynamic_yarn``), costs what the first load did: 8.4 s for a 7B on
2 cores, most of it repacking the weights for the CPU's kernels. A new context costs the clearing
of its KV cache: 0.05 s for 512 tokens of that 7B, 0.41 s for 4,096 (llama-cpp-python 0.3.36,
median-free single readings on a shared 2-core machine).

llama-cpp-python has no call for this; its ``Llama`` keeps the context, its parameters, its size and the
token history that mirrors the KV cache in attributes of its own, which are replaced together here (checked
against llama-cpp-python 0.3.x, the range the project depends on).
"""

from __future__ import annotations

import contextlib
import time

import llama_cpp
import numpy as np
from llama_cpp import _internals

from yarn_cli.errors import EvaluationError


def resize_context(llm: llama_cpp.Llama, n_ctx: int) -> float:
    """Give ``llm`` an empty context of ``n_ctx`` tokens; returns the seconds it took.

    The old context is freed first, so memory holds one KV cache at a time; whatever was in it must be
    evaluated again (``llm.n_tokens`` is 0 afterwards). Where the new one cannot be created, the old
    size is restored and the failure is one error.
    """
    start = time.perf_counter()
    old = llm.context_params.n_ctx
    llm._ctx.close()
    try:
        _new_context(llm, n_ctx)
    except (ValueError, RuntimeError) as exc:
        _new_context(llm, old)
        raise EvaluationError(
            f"llama.cpp could not make a context of {n_ctx} tokens ({exc}); the chat goes on with {old}; "
            "set -c to choose"
        ) from exc
    return time.perf_counter() - start


def _new_context(llm: llama_cpp.Llama, n_ctx: int) -> None:
    llm.context_params.n_ctx = n_ctx
    context = _internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=llm.verbose)
    llm._stack.enter_context(contextlib.closing(context))  # freed before the model, as the first one
    llm._ctx = context
    llm._n_ctx = n_ctx
    llm.input_ids = np.ndarray((n_ctx,), dtype=np.intc)
    llm.n_tokens = 0
    llm._requires_eval = True  # 0.3.x: nothing cached may be sampled from
