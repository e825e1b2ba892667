"""Greedy completions of planned prompts in one session: in order, or several in flight.

Passkey and RULER both plan prompts column by column and hand each session its share; this is
what runs a share. A failure or Ctrl-C keeps every result that finished before it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, Protocol, TypeVar

from yarn_cli.backend import Session


class Job(Protocol):
    """A planned prompt: what it costs to evaluate, in prompt tokens (a kept prefix not counted)."""

    @property
    def tokens(self) -> int: ...


J = TypeVar("J", bound=Job)
R = TypeVar("R")


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def kept_costs(prompts: Sequence[Sequence[int]], reuse: bool) -> list[int]:
    """Each prompt's tokens to evaluate after the one before it, where the backend keeps a shared prefix.

    At least one token is always evaluated: its logits give the answer's first token.
    """
    costs = []
    previous: Sequence[int] = ()
    for tokens in prompts:
        kept = shared_prefix(previous, tokens) if reuse else 0
        costs.append(len(tokens) - min(kept, len(tokens) - 1))
        previous = tokens
    return costs


def run_jobs(
    session: Session,
    todo: Sequence[J],
    parallel: int,
    work: Callable[[Session, J, Callable[[int], None]], R],
    keep: Callable[[R], None],
    on_tokens: Callable[[int, J], None] | None,
) -> None:
    """``work`` for each job in order, or with up to ``parallel`` in flight; Ctrl-C or a failure keeps what
    finished.

    Each result is kept before the last of its tokens is reported, so progress shows it.
    """
    if parallel == 1:
        for job in todo:
            tokens = JobTokens(job, on_tokens)
            keep(work(session, job, tokens))
            tokens.finish()
        return

    lock = threading.Lock()

    def report(n: int, job: J) -> None:  # from the pool's threads, one at a time
        if on_tokens:
            with lock:
                on_tokens(n, job)

    readers: dict[Future[R], JobTokens[J]] = {}

    def collect(finished: set[Future[R]]) -> BaseException | None:
        """Keep every job that finished well; the first failure, if any, to raise after."""
        failure = None
        for future in finished:
            error = future.exception() if not future.cancelled() else None
            if future.cancelled() or (error is not None and failure is None):
                failure = failure or error
                continue
            if error is None:
                keep(future.result())
                readers[future].finish()
        return failure

    pending: set[Future[R]] = set()
    queue = iter(todo)
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="prompts")
    try:
        while True:
            while len(pending) < parallel and (item := next(queue, None)) is not None:
                reader = JobTokens(item, report)
                future = pool.submit(work, session, item, reader)
                readers[future] = reader
                pending.add(future)
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            failure = collect(finished)
            if failure is not None:
                raise failure  # a failure ends the run; the finished jobs are kept
    except BaseException:
        # Keep what else has finished, and do not wait for the requests in flight: closing the
        # backend ends them.
        collect({f for f in pending if f.done()})
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


class JobTokens(Generic[J]):
    """Reports a job's prompt tokens as they are read, and the rest of what its plan counted when it ends."""

    def __init__(self, job: J, on_tokens: Callable[[int, J], None] | None) -> None:
        self.job = job
        self.on_tokens = on_tokens
        self.reported = 0

    def __call__(self, n: int) -> None:
        n = min(n, self.job.tokens - self.reported)  # what the plan counted, no more
        self.reported += n
        if self.on_tokens and n > 0:
            self.on_tokens(n, self.job)

    def finish(self) -> None:
        self(self.job.tokens - self.reported)
