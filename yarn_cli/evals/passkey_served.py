"""Passkey retrieval against served models: the same seeded trials, over an OpenAI-compatible API.

Prompts are the local run's, sized in the model's tokens (from the GGUF, or from the server's own
tokenizer endpoint), sent as text to ``/v1/completions`` with greedy settings. Every trial keeps
the server's ``usage.prompt_tokens``: a server that saw fewer tokens than were sent truncated
the prompt (Ollama's ``num_ctx``, a proxy), and such a trial is marked truncated, never counted
as the model's failure. Up to ``parallel`` requests are in flight; each trial is independent of
the others, so the answers do not depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from yarn_cli.errors import InputError, ServerError
from yarn_cli.evals.passkey import (
    ANSWER_TOKENS,
    KEY_MAX,
    Prompt,
    PromptBuilder,
    Tokenizer,
    TrialKey,
    TrialResult,
    TrialSpec,
    build_prompt,
    plan_trials,
    trial_result,
)
from yarn_cli.serving.client import ContextExceededError, ServerClient

# A server may count one or two tokens differently (a BOS it adds or not); fewer than that is a cut.
TOKEN_SLACK = 2


@dataclass(frozen=True)
class Endpoint:
    """One served model to test: ``--server [LABEL=]URL``."""

    label: str
    url: str


def parse_endpoints(values: Sequence[str]) -> list[Endpoint]:
    """``[LABEL=]URL`` each; labels default to host:port and must differ, as they name the table's columns."""
    endpoints = []
    for value in values:
        label, sep, url = value.partition("=")
        if not sep or "://" in label:
            label, url = "", value
        url = url.strip()
        label = label.strip() or urlsplit(url).netloc or url
        endpoints.append(Endpoint(label, url))
    labels = [e.label for e in endpoints]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(
            f"two --server values share the label {repeated[0]!r}; name them: --server orig=URL --server yarn=URL"
        )
    return endpoints


# Prompts sized by estimate (no tokenizer at hand) may miss their size by this share without being "cut".
ESTIMATE_MARGIN = 0.05
CALIBRATION_CHARS = 4000


def truncated(sent: int, seen: int | None, margin: float = 0.0) -> bool:
    return seen is not None and seen < sent * (1 - margin) - TOKEN_SLACK


class CalibratedCounter:
    """Token counts estimated from a server's own ``usage.prompt_tokens``, for servers with no tokenizer to ask.

    Two requests measure the fixed part of the prompt and the filler's tokens per character; every
    prompt's size is then estimated from its length in characters (the filler is one sentence
    repeated, so the rate holds), and each trial records what the server really counted.
    """

    def __init__(self, client: ServerClient) -> None:
        base = build_prompt(0, 0, KEY_MAX)
        longer = build_prompt(CALIBRATION_CHARS, 0, KEY_MAX)
        self.fixed = client.count_tokens(base)
        self.base_chars = len(base)
        self.per_char = (client.count_tokens(longer) - self.fixed) / (len(longer) - len(base))

    def __call__(self, text: str) -> list[int]:
        """Placeholder tokens, as many as the estimate: a served prompt is sent as text."""
        return [0] * max(1, round(self.fixed + (len(text) - self.base_chars) * self.per_char))


def run_passkey_served(
    servers: Sequence[tuple[str, ServerClient]],
    lengths: list[int],
    trials: int,
    depths: list[float] | None,
    seed: int,
    tokenize: Tokenizer,
    *,
    parallel: int = 1,
    estimated: bool = False,
    done: dict[TrialKey, TrialResult] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run every trial not in ``done`` on every server; KeyboardInterrupt stops after the requests in flight."""
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, got {parallel}")
    builder = PromptBuilder(tokenize)
    for length in lengths:
        builder.check_length(length)
    specs = plan_trials(lengths, trials, depths, seed)
    prompts = {(s.length, s.index): builder.build(s) for s in specs}
    done = done or {}
    todo = [
        (label, client, spec, prompts[(spec.length, spec.index)])
        for label, client in servers
        for spec in specs
        if (label, spec.length, spec.index) not in done
    ]
    if on_start:
        on_start(len(todo))
    results: list[TrialResult] = []

    def keep(finished: set[Future[TrialResult]]) -> BaseException | None:
        """Record every trial that finished well; the first failure, if any, to raise after."""
        failure = None
        for future in finished:
            error = future.exception() if not future.cancelled() else None
            if future.cancelled() or (error is not None and failure is None):
                failure = failure or error
                continue
            if error is None:
                results.append(future.result())
                if on_trial:
                    on_trial(results[-1])
        return failure

    pending: set[Future[TrialResult]] = set()
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="passkey")
    try:
        while True:
            while len(pending) < parallel and (item := next(queue, None)) is not None:
                pending.add(pool.submit(_one_trial, *item, ESTIMATE_MARGIN if estimated else 0.0))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            failure = keep(finished)
            if failure is not None:
                raise failure  # a ServerError ends the run; the finished trials are kept
    except BaseException:
        # Keep what else has finished, and do not wait for the requests in flight: the caller closes
        # the clients, which ends them.
        keep({f for f in pending if f.done()})
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def _one_trial(label: str, client: ServerClient, spec: TrialSpec, prompt: Prompt, margin: float) -> TrialResult:
    start = time.perf_counter()
    try:
        completion = client.complete(prompt.text, ANSWER_TOKENS)
    except ContextExceededError as exc:
        raise ServerError(
            f"{exc}. The prompt was {len(prompt.tokens):,} tokens ({spec.length:,} asked): start the server with a "
            "larger context (llama-server -c N, Ollama's num_ctx, vLLM's --max-model-len) or test shorter --lengths; "
            "llama-server gives no more than the model's trained context whatever -c says, so a longer one needs a "
            "file extended by yarn-cli convert (for vLLM: the --hf-overrides yarn-cli inspect shows for it)"
        ) from exc
    seconds = time.perf_counter() - start
    result = trial_result(label, spec, prompt, completion.text, seconds, completion.prompt_tokens or 0)
    return replace(
        result,
        server_prompt_tokens=completion.prompt_tokens,
        truncated=truncated(len(prompt.tokens), completion.prompt_tokens, margin),
    )


def served_record(servers: Sequence[tuple[str, ServerClient]], tokenizer: dict[str, Any] | str) -> dict[str, Any]:
    """The record's ``model`` section for a served run: which servers and models, and whose tokens sized the prompts."""
    return {
        "servers": [{"label": label, "url": client.url, "model": client.model} for label, client in servers],
        "tokenizer": tokenizer,
    }
