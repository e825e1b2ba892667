"""``yarn-cli chat`` on a terminal: the REPL, its slash commands, and the lines shown after each reply.

The same for a model run here and a served one: both sessions take turns the same way
(``conversation.TurnTaking``). The notes after a reply (why it stopped, a rescale) are the one-shot's too.
"""

from __future__ import annotations

import contextlib
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from yarn_cli.cli.render import err, show_error, warn
from yarn_cli.errors import InputError, YarnCliError

# Annotations only: a chat imports the session module it needs (llama.session, or serving.chat and its
# httpx client) when it starts. llama_cpp itself is loaded for every command, by yarn_cli.cli (before numpy).
if TYPE_CHECKING:
    from yarn_cli.conversation import TurnStats
    from yarn_cli.llama.session import ChatSession
    from yarn_cli.serving.chat import ServerChatSession

    Session = ChatSession | ServerChatSession

REPL_HELP = """\
/help           this help
/exit           leave (Ctrl-D too)
/clear          forget the conversation (the system prompt stays)
/regen          answer the last message again
/system TEXT    set the system prompt
/stats          figures of the last reply and the conversation
/save FILE      save the conversation as JSON
/load FILE      load a conversation saved with /save
End a line with \\ to continue on the next line; Ctrl-C stops a reply and keeps the session."""


def write(text: str) -> None:
    """Reply text to stdout, at once (it streams)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def show_reply_notes(session: Session, stats: TurnStats) -> None:
    """After a reply, on stderr: a rescale it caused, and why it stopped when it did not end by itself."""
    scaled = _scale_note(stats)
    if scaled:
        err.print(f"[dim]({escape(scaled)})[/]", soft_wrap=True)
    if stats.resized_from:
        err.print(
            f"[dim](context grown from {stats.resized_from} to {stats.n_ctx} tokens for this reply, in "
            f"{stats.resize_seconds:.2f} s; {stats.prompt_evaluated} tokens evaluated again)[/]",
            soft_wrap=True,
        )
    note = _stop_note(session, stats)
    if note:
        err.print(f"[dim]({note})[/]")


def _stop_note(session: Session, stats: TurnStats) -> str | None:
    """Why a reply ended early, and how to get more, when it did not end by itself."""
    if stats.stopped == "loop":
        return "stopped: the reply kept repeating itself; -n N lets it run to N tokens"
    if stats.stopped == "length" and session.sampling.stop_loops:
        if session.sampling.max_tokens < 0:
            return "stopped: the context is full"
        limit = session.sampling.max_tokens
        return f"stopped at the one-shot limit of {limit} tokens; -n N allows more, -n -1 no limit"
    if stats.stopped == "interrupted":
        return "stopped"
    return None


def _scale_note(stats: TurnStats) -> str | None:
    if not stats.rescaled:
        return None
    was = "the model as it came" if stats.rescaled_from is None else f"YaRN x{stats.rescaled_from:g}"
    factor = stats.ladder_factor or 1.0
    overall = ""
    if stats.scale and f"{stats.scale:g}" != f"{factor:g}":  # a model that came with its own YaRN: multiplied
        overall = f" (x{stats.scale:g} with the model's own YaRN)"
    return (
        f"--yarn dynamic: YaRN x{factor:g}{overall} from this reply (was {was}); model loaded again in "
        f"{stats.rescale_seconds:.2f} s, {stats.prompt_evaluated} tokens evaluated at the new scale"
    )


def scale_history(history: list[TurnStats]) -> str:
    """--yarn dynamic: which replies ran at which scale, e.g. "1-3 as the model came; 4-5 YaRN x1.25"."""
    spans: list[list[Any]] = []  # [first, last, scale, seconds to rescale]
    for number, stats in enumerate(history, start=1):
        if spans and spans[-1][2] == stats.ladder_factor and not stats.rescaled:
            spans[-1][1] = number
        else:
            spans.append([number, number, stats.ladder_factor, stats.rescale_seconds if stats.rescaled else None])
    parts = []
    for first, last, scale, seconds in spans:
        replies = str(first) if first == last else f"{first}-{last}"
        what = "as the model came" if scale is None else f"YaRN x{scale:g}"
        cost = f" (rescaled in {seconds:.2f} s)" if seconds is not None else ""
        parts.append(f"{replies} {what}{cost}")
    return "; ".join(parts)


def _stats_line(stats: TurnStats) -> str:
    prompt = f"prompt {stats.prompt_tps:.1f} tok/s" if stats.prompt_evaluated > 1 else "prompt cached"
    if not stats.prompt_counted:
        prompt = f"first token after {stats.first_token_ms / 1000:.2f} s"
    context = f"{stats.context_used}/{stats.n_ctx}" if stats.n_ctx else f"{stats.context_used} tokens"
    scale = f", YaRN x{stats.ladder_factor:g}" if stats.ladder_factor else ""  # --yarn dynamic, once rescaled
    return f"{prompt}, generation {stats.generation_tps:.1f} tok/s, context {context}{scale}"


def _read_message() -> str | None:
    """One message from the terminal; a trailing backslash continues it on the next line."""
    lines: list[str] = []
    prompt = "> "
    while True:
        try:
            line = input(prompt)
        except EOFError:
            return None if not lines else "\n".join(lines)
        if line.endswith("\\"):
            lines.append(line[:-1])
            prompt = ". "
            continue
        lines.append(line)
        return "\n".join(lines)


def repl(session: Session, *, stream: bool) -> None:
    """Read messages and slash commands until /exit or Ctrl-D; a failed reply is one line, and the session goes on."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    err.print("[dim]Type /help for commands, /exit or Ctrl-D to leave.[/]")
    history: list[TurnStats] = []  # the replies since the conversation began or was cleared
    while True:
        try:
            text = _read_message()
        except KeyboardInterrupt:
            err.print("\n[dim](Ctrl-D or /exit to leave)[/]")
            continue
        if text is None:
            err.print()
            return
        if not text.strip():
            continue
        if text.startswith("/"):
            command, _, arg = text.strip().partition(" ")
            try:
                if _command(session, command, arg.strip(), history, stream):
                    return
            except YarnCliError as exc:
                show_error(str(exc))
            continue
        stats = _turn(session, partial(session.reply, text), stream)
        if stats is not None:
            history.append(stats)


def _turn(session: Session, run: Any, stream: bool) -> TurnStats | None:
    try:
        reply, stats = run(write if stream else None)
    except YarnCliError as exc:
        show_error(str(exc))
        return None
    if not stream:
        write(reply)
    write("\n")
    if stats.dropped_turns:
        warn(f"dropped the {stats.dropped_turns} oldest turn(s) to fit the context of {stats.n_ctx} tokens")
    show_reply_notes(session, stats)
    err.print(f"[dim]{_stats_line(stats)}[/]")
    return stats


def _command(session: Session, command: str, arg: str, history: list[TurnStats], stream: bool) -> bool:
    """Run a /command; True means leave."""
    if command in ("/exit", "/quit", "/bye"):
        return True
    if command == "/help":
        err.print(REPL_HELP, markup=False)
    elif command == "/clear":
        session.clear()
        history.clear()
        err.print("[dim]Conversation cleared.[/]")
    elif command == "/regen":
        stats = _turn(session, session.regenerate, stream)
        if stats is not None:
            history[-1:] = [stats]  # the regenerated reply replaces the last one
    elif command == "/system":
        session.conversation.system = arg or None
        err.print(f"[dim]System prompt {'set' if arg else 'removed'}.[/]")
    elif command == "/stats":
        turns = len(session.conversation.turns)
        tokens, _ = session.prompt_tokens(session.conversation.messages())
        room = f" of {session.n_ctx}" if session.n_ctx else ""
        limit = getattr(session, "context_limit", 0)
        if limit > session.n_ctx:
            room += f" (it grows up to {limit} as needed)"
        err.print(f"{turns} messages, {len(tokens)} tokens{room} in the context")
        if history:
            last = history[-1]
            err.print(
                f"last reply: {last.completion_tokens} tokens, {_stats_line(last)}, "
                f"first token after {last.first_token_ms:.0f} ms"
            )
        if getattr(session, "dynamic", None) is not None and history:
            err.print(f"scale per reply: {scale_history(history)}")
    elif command in ("/save", "/load"):
        if not arg:
            raise InputError(f"{command} needs a file name")
        if command == "/save":
            session.conversation.save(Path(arg))
            err.print(f"[dim]Saved {len(session.conversation.turns)} messages to {escape(arg)}.[/]")
        else:
            from yarn_cli.conversation import Conversation

            session.conversation = Conversation.load(Path(arg))
            history.clear()  # its replies were another session's
            err.print(f"[dim]Loaded {len(session.conversation.turns)} messages from {escape(arg)}.[/]")
    else:
        raise InputError(f"unknown command {command}; /help lists them")
    return False
