"""Negative log-likelihoods from a batch of logits, fast enough not to keep llama.cpp waiting.

As llama.cpp's own perplexity does it: float32 exponentials of ``logit - max`` summed in float64.
Rows go in small blocks that stay in cache and reuse one buffer per thread (whole-batch numpy
temporaries are hundreds of MB for a 512 x 49,152 batch, and fresh pages cost more than the
arithmetic), and the blocks are spread over threads: numpy releases the GIL in its loops, and
llama.cpp's own threads are idle while a batch is scored.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import numpy as np

ROWS_PER_BLOCK = 8


class LogitScorer:
    def __init__(self, n_vocab: int, workers: int = 1) -> None:
        self._n_vocab = n_vocab
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="score") if workers > 1 else None
        self._local = threading.local()

    def __enter__(self) -> LogitScorer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def score(self, logits: np.ndarray, targets: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = logsumexp(logits[i]) - logits[i, targets[i]]`` for every row of ``logits``."""
        starts = range(0, len(logits), ROWS_PER_BLOCK)
        if self._pool is None:
            for start in starts:
                self._block(logits, targets, out, start)
        else:
            # list() waits for every block and re-raises the first failure
            list(self._pool.map(lambda start: self._block(logits, targets, out, start), starts))

    def _block(self, logits: np.ndarray, targets: np.ndarray, out: np.ndarray, start: int) -> None:
        rows = logits[start : start + ROWS_PER_BLOCK]
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = np.empty((ROWS_PER_BLOCK, self._n_vocab), dtype=np.float32)
        shifted = buffer[: len(rows)]
        top = rows.max(axis=1)
        np.subtract(rows, top[:, None], out=shifted)
        np.exp(shifted, out=shifted)
        log_z = top + np.log(shifted.sum(axis=1, dtype=np.float64))
        out[start : start + len(rows)] = log_z - rows[np.arange(len(rows)), targets[start : start + len(rows)]]
