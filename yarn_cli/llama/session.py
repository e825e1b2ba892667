"""A chat conversation with a loaded model: the model's own template, streaming, context limits.

Formatting uses the GGUF's ``tokenizer.chat_template`` through llama-cpp-python's
Jinja2 formatter, generation its ``create_completion`` (which reuses the KV cache
for the shared prefix of consecutive turns), and timings come from llama.cpp's own
performance counters. A file without a template (a base model, such as Gemma 3 270M)
gets plain completion: an invented template would only teach it to echo role markers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from yarn_cli.conversation import LOOP_MAX_PERIOD, LOOP_REPEATS, Conversation, TurnStats, TurnTaking, ends_in_loop
from yarn_cli.errors import EvaluationError, InputError
from yarn_cli.llama.chat_context import reply_room, rounded
from yarn_cli.llama.context_resize import resize_context
from yarn_cli.llama.dynamic_yarn import DynamicYarn, Rescale
from yarn_cli.sampling import Sampling

# Room kept free for the reply when older turns must be dropped to fit a new one.
MIN_REPLY_ROOM = 64


class ContextOverflowError(InputError):
    """A single message does not fit in the context at all."""


class ChatSession(TurnTaking):
    """A conversation bound to a model; ``reply`` streams the next assistant turn."""

    _retract_on = (ContextOverflowError,)  # a message that can never fit is taken back

    def __init__(
        self,
        llm: llama_cpp.Llama,
        sampling: Sampling,
        system: str | None = None,
        dynamic: DynamicYarn | None = None,
        scale: float | None = None,
        context_limit: int | None = None,
        to_measure: bool = False,
    ) -> None:
        """``context_limit``: the most the context may grow to (None: it keeps its size, as -c asks).
        ``to_measure``: a one-shot, whose context is made to the size of its first prompt and reply."""
        sampling.check()
        self.llm = llm
        self.dynamic = dynamic  # --yarn dynamic: the scale follows the conversation's size
        self.scale = scale  # the RoPE scale factor llm runs with (Effective.factor); --yarn dynamic keeps its own
        self.sampling = sampling
        self.conversation = Conversation(system=system)
        template = llm.metadata.get("tokenizer.chat_template")
        eos_id = llm.token_eos()
        bos_id = llm.token_bos()
        self._eos_text = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos_text = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        self._formatter = (
            Jinja2ChatFormatter(
                template=template, eos_token=self._eos_text, bos_token=bos_text, stop_token_ids=[eos_id]
            )
            if template
            else None
        )
        self.n_ctx = llm.n_ctx()
        self.context_limit = max(context_limit or 0, self.n_ctx)
        self._to_measure = to_measure and context_limit is not None

    @property
    def plain(self) -> bool:
        """No chat template in the file: the text so far is continued as it is."""
        return self._formatter is None

    def prompt_tokens(self, messages: list[dict[str, str]]) -> tuple[list[int], Any]:
        if self._formatter is None:
            text = Conversation.plain_text(messages)
            return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), None
        formatted = self._formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
        return tokens, formatted

    def _fit(self, prompt: tuple[list[int], Any] | None = None) -> tuple[list[int], Any, int]:
        """Drop the oldest turns (never the system prompt or the new message) until the prompt fits.

        ``prompt``: the conversation as it stands, already tokenized."""
        dropped = 0
        while True:
            tokens, formatted = prompt or self.prompt_tokens(self.conversation.messages())
            prompt = None
            room = self.n_ctx - len(tokens)
            if room >= MIN_REPLY_ROOM or len(self.conversation.turns) <= 1:
                break
            # remove the oldest user/assistant pair
            del self.conversation.turns[: 2 if len(self.conversation.turns) > 2 else 1]
            dropped += 1
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; "
                "raise -c, or extend the model with `yarn-cli convert` or --rope-scale"
            )
        return tokens, formatted, dropped

    def clear(self) -> None:
        super().clear()
        if self.dynamic is not None and self.dynamic.factor is not None:
            self.llm, _ = self.dynamic.rescale(self.llm, None)  # a new conversation starts as the model came

    def _rescale(self) -> tuple[float | None, Rescale | None]:
        """--yarn dynamic: load the model with a larger scale when this turn would not fit the current one."""
        if self.dynamic is None:
            return None, None
        before = self.dynamic.factor
        tokens, _ = self.prompt_tokens(self.conversation.messages())
        factor = self.dynamic.needed(len(tokens) + MIN_REPLY_ROOM)
        if factor is None:
            return before, None
        self.llm, change = self.dynamic.rescale(self.llm, factor)
        return before, change

    def _resize(self, tokens: list[int]) -> tuple[int, float]:
        """A context of another size when ``tokens`` (this turn's prompt) need it: (the size before, seconds),
        or (0, 0) for none.

        A one-shot's first context is made to measure; a conversation's grows when the prompt and the
        reply's room no longer fit, up to ``context_limit``, at least twofold, so that a long conversation
        is evaluated again only a few times.
        """
        if self.dynamic is not None:
            return 0, 0.0
        need = len(tokens) + reply_room(self.sampling.max_tokens, self.n_ctx)
        if self._to_measure:  # nothing evaluated yet: not a change worth a note
            self._to_measure = False
            size = min(self.context_limit, rounded(need))
            if size > self.n_ctx or 2 * size < self.n_ctx:  # too small, or far too large an estimate
                resize_context(self.llm, size)
                self.n_ctx = self.llm.n_ctx()
            return 0, 0.0
        if need <= self.n_ctx or self.n_ctx >= self.context_limit:
            return 0, 0.0
        size = min(self.context_limit, max(2 * self.n_ctx, rounded(need)))
        before = self.n_ctx
        seconds = resize_context(self.llm, size)
        self.n_ctx = self.llm.n_ctx()
        return before, seconds

    def _generate(self, on_text: Callable[[str], None] | None) -> tuple[str, TurnStats]:
        before, change = self._rescale()
        prompt = self.prompt_tokens(self.conversation.messages())
        resized_from, resize_seconds = self._resize(prompt[0])
        tokens, formatted, dropped = self._fit(prompt)
        stats = TurnStats(prompt_tokens=len(tokens), n_ctx=self.n_ctx, dropped_turns=dropped)
        stats.resized_from, stats.resize_seconds = resized_from, resize_seconds
        stats.scale = self.scale
        if self.dynamic is not None:
            stats.scale, stats.ladder_factor = self.dynamic.scale, self.dynamic.factor
            if change is not None:
                stats.rescaled, stats.rescaled_from, stats.rescale_seconds = True, before, change.seconds
        ctx = self.llm.ctx
        llama_cpp.llama_perf_context_reset(ctx)
        s = self.sampling
        max_tokens = self.n_ctx - len(tokens) if s.max_tokens < 0 else min(s.max_tokens, self.n_ctx - len(tokens))
        stream: Iterator[Any] = self.llm.create_completion(  # type: ignore[assignment]
            tokens,
            max_tokens=max_tokens,
            temperature=s.temp,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=s.seed,
            stop=formatted.stop if formatted else None,
            stopping_criteria=formatted.stopping_criteria if formatted else None,
            stream=True,
        )
        pieces: list[str] = []
        first_token_ms = 0.0
        start = time.perf_counter()
        text = ""
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("text") or ""
                if not first_token_ms:
                    first_token_ms = (time.perf_counter() - start) * 1000
                if piece:
                    pieces.append(piece)
                    if on_text:
                        on_text(piece)
                if choice.get("finish_reason"):
                    stats.stopped = "length" if choice["finish_reason"] == "length" else "eos"
                elif s.stop_loops and piece:
                    text = (text + piece)[-LOOP_MAX_PERIOD * LOOP_REPEATS :]
                    if ends_in_loop(text):
                        stats.stopped = "loop"
                        break
        except KeyboardInterrupt:
            stats.stopped = "interrupted"
        except (RuntimeError, ValueError) as exc:
            raise EvaluationError(f"llama.cpp stopped while generating the reply: {exc}") from exc
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
        reply = "".join(pieces)
        perf = llama_cpp.llama_perf_context(ctx)
        stats.prompt_evaluated = int(perf.n_p_eval)
        stats.prompt_ms = float(perf.t_p_eval_ms)
        # The reply's tokens as sampled, not llama.cpp's single-token decodes (perf.n_eval): the last token
        # sampled is never decoded, and a one-token prompt suffix decodes as a single token too. An end of
        # turn (the EOS token, a stop string) is not part of the reply.
        decoded = self.llm.n_tokens - len(tokens)
        cut_short = stats.stopped != "eos" and bool(decoded or pieces)  # its last token sampled, never decoded
        stats.completion_tokens = decoded + int(cut_short)
        stats.generation_ms = float(perf.t_eval_ms)
        stats.first_token_ms = first_token_ms
        stats.context_used = len(tokens) + stats.completion_tokens
        self.conversation.turns.append({"role": "assistant", "content": reply})
        return reply, stats
