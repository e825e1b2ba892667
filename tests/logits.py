"""Files loaded straight into llama-cpp-python, without yarn-cli: the logits a converted file must match.

A file converted by yarn-cli must behave exactly like the unconverted file loaded with the
equivalent llama.cpp parameters; these helpers give the second side of that comparison.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np

YARN = llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN
LINEAR = llama_cpp.LLAMA_ROPE_SCALING_TYPE_LINEAR


def load(path: Path, n_ctx: int, **params: object) -> llama_cpp.Llama:
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=2, verbose=False, **params
    )


def logits(path: Path, tokens: list[int], n_ctx: int, **params: object) -> np.ndarray:
    llm = load(path, n_ctx, **params)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], copy=True)
    finally:
        llm.close()


def trained(path: Path) -> tuple[int, float]:
    llm = load(path, 64)
    try:
        return (
            llama_cpp.llama_model_n_ctx_train(llm.model),
            llama_cpp.llama_model_rope_freq_scale_train(llm.model),
        )
    finally:
        llm.close()


TINY_TOKENS = list(range(3, 3 + 200))
