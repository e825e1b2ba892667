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

    def compare(
        self,
        reference: np.ndarray,
        variant: np.ndarray,
        targets: np.ndarray,
        out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """Per row: both negative log-likelihoods, KL(P_reference || P_variant) and whether the top tokens agree.

        ``out``: (reference nll, variant nll, KL, same top token), each a row per logits row.
        KL = sum p_ref (logit_ref - logit_var) - (logsumexp_ref - logsumexp_var), as llama-perplexity's
        ``--kl-divergence`` computes it, with float32 exponentials summed in float64.
        """
        starts = range(0, len(reference), ROWS_PER_BLOCK)
        if self._pool is None:
            for start in starts:
                self._compare_block(reference, variant, targets, out, start)
        else:
            list(self._pool.map(lambda start: self._compare_block(reference, variant, targets, out, start), starts))

    def _compare_block(
        self,
        reference: np.ndarray,
        variant: np.ndarray,
        targets: np.ndarray,
        out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        start: int,
    ) -> None:
        stop = min(start + ROWS_PER_BLOCK, len(reference))
        ref, var = reference[start:stop], variant[start:stop]
        buffers = getattr(self._local, "pair", None)
        if buffers is None:
            buffers = self._local.pair = (
                np.empty((ROWS_PER_BLOCK, self._n_vocab), dtype=np.float32),
                np.empty((ROWS_PER_BLOCK, self._n_vocab), dtype=np.float32),
            )
        weights, difference = buffers[0][: len(ref)], buffers[1][: len(ref)]
        rows = np.arange(len(ref))
        picked = targets[start:stop]
        lse_var = self._log_partition(var, weights)
        ref_top = ref.max(axis=1)
        np.subtract(ref, ref_top[:, None], out=weights)  # the reference's exponentials stay in weights
        np.exp(weights, out=weights)
        partition = weights.sum(axis=1, dtype=np.float64)
        lse_ref = ref_top + np.log(partition)
        nll_ref, nll_var, kl, same = out
        nll_ref[start:stop] = lse_ref - ref[rows, picked]
        nll_var[start:stop] = lse_var - var[rows, picked]
        np.subtract(ref, var, out=difference)
        np.multiply(difference, weights, out=difference)
        expected = difference.sum(axis=1, dtype=np.float64) / partition  # E_ref[logit_ref - logit_var]
        kl[start:stop] = np.maximum(expected - (lse_ref - lse_var), 0.0)  # rounding may dip below 0
        same[start:stop] = ref.argmax(axis=1) == var.argmax(axis=1)

    @staticmethod
    def _log_partition(logits: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        top = logits.max(axis=1)
        np.subtract(logits, top[:, None], out=buffer)
        np.exp(buffer, out=buffer)
        return top + np.log(buffer.sum(axis=1, dtype=np.float64))
