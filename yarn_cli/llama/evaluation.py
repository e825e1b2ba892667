"""Running a loaded model over given tokens, for the evaluations: its vocabulary, scores, greedy answers.

Counts come from llama.cpp's own performance counters, so an evaluation reports the tokens
llama.cpp really evaluated (a prefix reused from the KV cache is not counted again).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np

from yarn_cli.backend import Tokenizer
from yarn_cli.errors import EvaluationError, InputError, ModelLoadError
from yarn_cli.llama.loader import captured_log, load_error
from yarn_cli.llama.scoring import LogitScorer
from yarn_cli.model import Model


class Vocabulary(Tokenizer):
    """The model's tokenizer alone (no weights loaded), for sizing prompts and cutting texts.

    llama.cpp loads it when it is first used; ``close`` frees it.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self._llm: llama_cpp.Llama | None = None

    def _loaded(self) -> llama_cpp.Llama:
        if self._llm is None:
            with captured_log(echo=False) as lines:
                try:
                    self._llm = llama_cpp.Llama(model_path=str(self.model.path), vocab_only=True, verbose=False)
                except (ValueError, RuntimeError, OSError) as exc:
                    raise ModelLoadError(load_error(self.model.path, lines, exc)) from exc
        return self._llm

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(self._loaded().model)))

    @property
    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(llama_cpp.llama_model_get_vocab(self._loaded().model)))

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self._loaded().tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._loaded().detokenize(list(tokens)).decode("utf-8", errors="replace")

    def chat_prompt(self, message: str, answer_start: str) -> tuple[str, list[int]]:
        """The GGUF's ``tokenizer.chat_template`` (through llama-cpp-python's Jinja formatter, as chat uses it)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # jinja2: only for --chat-template

        llm = self._loaded()
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise InputError(
                f"{self.model.path.name} has no chat template (tokenizer.chat_template): leave out --chat-template "
                "to give it the raw prompt, as RULER gives base models"
            )
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        formatted = formatter(messages=[{"role": "user", "content": message}])
        text = formatted.prompt + answer_start
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=not formatted.added_special, special=True)
        return text, tokens

    def describe(self) -> dict[str, Any]:
        """The served GGUF whose tokens sized a run: its header, wherever the file lies."""
        return {"header_sha256": self.model.header.fingerprint(), "path": str(self.model.path)}

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


@contextlib.contextmanager
def vocabulary(model: Model) -> Iterator[Vocabulary]:
    vocab = Vocabulary(model)
    vocab._loaded()  # a file llama.cpp cannot read fails here, where it is opened
    try:
        yield vocab
    finally:
        vocab.close()


def greedy_completion(
    llm: llama_cpp.Llama,
    tokens: Sequence[int],
    max_tokens: int,
    *,
    reuse: bool,
    on_tokens: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """The greedy continuation of ``tokens``, and the tokens llama.cpp evaluated for it.

    With ``reuse``, the prefix this prompt shares with the previous one stays in the KV cache.
    ``on_tokens(n)``: prompt tokens evaluated so far come in batches, while a long prompt is read.
    """
    if not reuse:
        llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    try:
        if on_tokens is not None:
            _read_ahead(llm, tokens, on_tokens)
        completion: Any = llm.create_completion(list(tokens), max_tokens=max_tokens, temperature=0.0, top_k=1)
    except (RuntimeError, ValueError) as exc:
        raise EvaluationError(f"llama.cpp could not answer a {len(tokens)}-token prompt: {exc}") from exc
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return completion["choices"][0]["text"], int(perf.n_p_eval) + int(perf.n_eval)


def _read_ahead(llm: llama_cpp.Llama, tokens: Sequence[int], on_tokens: Callable[[int], None]) -> None:
    """Evaluate a prompt's whole batches ahead of ``create_completion``, reporting each, in its exact batches.

    ``create_completion`` keeps the prefix it finds in the KV cache and evaluates the rest in
    ``n_batch`` batches from there, reporting nothing until it answers. This evaluates those same
    batches first, from the same place, all but the last (which holds the prompt's last token and
    gives the logits the answer starts from): so the cache, and every logit, is what it would have
    been, and ``create_completion`` finds all but the last batch kept. Where llama-cpp-python's
    state is not the one this expects, nothing is read ahead.
    """
    try:
        cached = llm._input_ids.tolist()  # the tokens llama-cpp-python holds in the cache, as it compares them
        n_batch, memory = int(llm.n_batch), llm._ctx
        recurrent = bool(getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False))
    except AttributeError:
        return
    if recurrent or len(tokens) >= llm.n_ctx():  # a recurrent state cannot be cut back; too long: its own error
        return
    start = llama_cpp.Llama.longest_token_prefix(cached, tokens)
    if start >= len(tokens) - 1:
        return  # all cached: create_completion evaluates at most one token
    batches = (len(tokens) - 1 - start) // n_batch
    if batches == 0:
        return
    if start == 0:
        llm.reset()  # as create_completion does when nothing is shared
    elif not memory.kv_cache_seq_rm(-1, start, -1):
        return
    llm.n_tokens = start
    for k in range(batches):
        llm.eval(tokens[start + k * n_batch : start + (k + 1) * n_batch])
        on_tokens(n_batch)


@dataclass
class EvaluationTime:
    """Where a scoring pass spends its time: inside ``llama_decode``, and scoring the logits it gave."""

    decode: float = 0.0
    scoring: float = 0.0


def negative_log_likelihoods(
    llm: llama_cpp.Llama,
    tokens: Sequence[int],
    on_batch: Callable[[int], None] | None = None,
    *,
    scorer: LogitScorer | None = None,
    timings: EvaluationTime | None = None,
) -> Any:
    """``nll[i] = -log p(tokens[i + 1] | tokens[: i + 1])``, from a fresh KV cache, batch by batch.

    Only one batch of logits (n_batch x n_vocab floats) is alive at a time, so a 64k-token pass
    does not need gigabytes for logits; each is scored before the next ``llama_decode`` reuses it.
    """
    targets = np.asarray(tokens[1:], dtype=np.int64)
    nll = np.empty(len(tokens) - 1, dtype=np.float64)
    own_scorer = scorer is None
    scorer = scorer if scorer is not None else LogitScorer(int(llm.n_vocab()))
    try:
        for start, (logits,) in _decoded_batches([llm], tokens, len(targets), on_batch, timings):
            scorer.score(logits, targets[start : start + len(logits)], nll[start : start + len(logits)])
    finally:
        if own_scorer:
            scorer.close()
    return nll


@dataclass(frozen=True)
class ComparedLikelihoods:
    """A window under a reference and a variant, position by position (as ``negative_log_likelihoods``)."""

    reference: Any  # nll, float64
    variant: Any
    kl: Any  # KL(P_reference || P_variant), nats
    same_top: Any  # bool: both give the same most likely token


def compared_log_likelihoods(
    reference: llama_cpp.Llama,
    variant: llama_cpp.Llama,
    tokens: Sequence[int],
    on_batch: Callable[[int], None] | None = None,
    *,
    scorer: LogitScorer,
    timings: EvaluationTime | None = None,
) -> ComparedLikelihoods:
    """Both models over the same batches, each batch's two logit arrays compared before the next decode.

    Exact and streamed: two batches of logits are alive at a time, never a window's, and nothing is
    written to disk (llama-perplexity's ``--kl-divergence-base`` file is about 10 GB at 10k tokens).
    """
    targets = np.asarray(tokens[1:], dtype=np.int64)
    n = len(targets)
    out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=bool))
    for start, (ref, var) in _decoded_batches([reference, variant], tokens, n, on_batch, timings):
        rows = slice(start, start + len(ref))
        scorer.compare(ref, var, targets[rows], (out[0][rows], out[1][rows], out[2][rows], out[3][rows]))
    return ComparedLikelihoods(*out)


def _decoded_batches(
    llms: Sequence[llama_cpp.Llama],
    tokens: Sequence[int],
    scored: int,
    on_batch: Callable[[int], None] | None,
    timings: EvaluationTime | None,
) -> Iterator[tuple[int, list[Any]]]:
    """``tokens`` decoded batch by batch from fresh KV caches in every model; per batch, its first position
    and each model's logits for the rows that have a target (``scored`` in all), while they are valid.

    The time inside ``llama_decode`` and the time the caller spends on the logits go to ``timings``.
    """
    timings = timings if timings is not None else EvaluationTime()
    for llm in llms:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    n_batch = min(int(llama_cpp.llama_n_batch(llm.ctx)) for llm in llms)
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        for start in range(0, len(tokens), n_batch):
            part = tokens[start : start + n_batch]
            batch.n_tokens = len(part)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            began = time.perf_counter()
            for llm in llms:
                code = llama_cpp.llama_decode(llm.ctx, batch)
                llama_cpp.llama_synchronize(llm.ctx)  # a GPU finishes the batch here, not inside the scoring
                if code != 0:
                    raise EvaluationError(
                        f"llama.cpp could not evaluate tokens {start}..{start + len(part)} (llama_decode returned "
                        f"{code})"
                    )
            decoded = time.perf_counter()
            timings.decode += decoded - began
            rows = min(len(part), scored - start)
            if rows > 0:
                yield (
                    start,
                    [
                        np.ctypeslib.as_array(
                            llama_cpp.llama_get_logits(llm.ctx), shape=(len(part), int(llm.n_vocab()))
                        )[:rows]
                        for llm in llms
                    ],
                )
            timings.scoring += time.perf_counter() - decoded
            if on_batch:
                on_batch(len(part))
    finally:
        llama_cpp.llama_batch_free(batch)
