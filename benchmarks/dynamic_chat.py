"""chat --yarn dynamic against a static YaRN x4 file and the unscaled model, in a growing conversation.

Each trial is one conversation through yarn-cli's own chat session (greedy): the first turn hides
a pass key in filler (the paper's passkey text), and a filler turn brings the conversation to each
of --sizes tokens and asks for the key at its end (asked in a turn of its own after filler turns,
SmolLM2-135M starts "The pass key is" and stops, even inside its context). The question and answer
are then replaced by a plain filler turn answered "OK", so each question finds the key in the first
turn, not in an earlier answer. The same conversations run in three
modes, alternating which goes first: `none` (the model as it came), `static-x4` (a YaRN x4 file
written by yarn-cli convert) and `dynamic` (chat --yarn dynamic: as it came, then the smallest
ladder scale that holds the conversation, the model reloaded and the conversation evaluated again).
Prints accuracy and time per size and mode. Target: dynamic matches none below the native context,
and static x4 beyond it, within the noise of the trial count.

    python benchmarks/dynamic_chat.py [--model M.gguf] [--sizes 6k,12k,24k] [--trials 3] [-t 2] [-ngl N]
        [-c N (default: the largest size + 256)] [--modes none,static-x4,dynamic]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yarn_cli.llama  # noqa: F401  # isort: skip  (llama.cpp's libraries before numpy's)

from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.evals.lengths import parse_lengths
from yarn_cli.evals.passkey import GARBAGE, TASK, filler, info_line, parse_answer
from yarn_cli.llama.dynamic_yarn import DynamicYarn
from yarn_cli.llama.evaluation import vocabulary
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.session import ChatSession
from yarn_cli.model import Model, open_model
from yarn_cli.sampling import Sampling

ASK = "Tell me the pass key."  # "What is the pass key? Answer with the number only." got 0/3 at 3k
FILL = "Here is more text. Reply with OK only."
MODES = ("none", "static-x4", "dynamic")


def run_conversation(
    session: ChatSession, sizes: list[int], key: int, chars_per_token: float, rng: random.Random
) -> list[dict[str, Any]]:
    """Grow the conversation to each size and ask for the key there; one record per size."""
    sampling = session.sampling
    first = int(sizes[0] * 0.5 * chars_per_token)
    before = rng.randrange(first)
    session.sampling = replace(sampling, max_tokens=4)
    session.reply("\n".join([TASK, filler(before), info_line(key), filler(first - before), FILL]))
    asked = []
    for size in sizes:
        current = len(session.prompt_tokens(session.conversation.messages())[0])
        room = max(0, size - current - 60)  # the question, the template's tokens and the answer
        text = filler(int(room * chars_per_token))
        session.sampling = replace(sampling, max_tokens=24)  # digits are single tokens in some vocabularies
        started = time.perf_counter()
        answer, stats = session.reply(f"{text}\n{ASK}")
        # The question is a probe, not part of the conversation: the turn stays as a filler turn answered
        # "OK", so a later question must find the key in the first turn, not in an earlier answer.
        turns = session.conversation.turns
        turns[-2:] = [{"role": "user", "content": f"{text}\n{FILL}"}, {"role": "assistant", "content": "OK"}]
        asked.append(
            {
                "size": size,
                "tokens": stats.prompt_tokens,
                "answer": answer.strip(),
                "correct": parse_answer(answer) == key,
                "scale": stats.scale,
                "seconds": time.perf_counter() - started,
            }
        )
    return asked


def open_session(mode: str, model: Model, x4: Path, options: LoadOptions, sampling: Sampling) -> ChatSession:
    if mode == "dynamic":
        dynamic = DynamicYarn(model, options)
        llm, _ = dynamic.load(None)
        return ChatSession(llm, sampling, dynamic=dynamic)
    llm, _ = load_model(open_model(x4) if mode == "static-x4" else model, options)
    return ChatSession(llm, sampling)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--sizes", default="6k,12k,24k", help="conversation sizes at which the key is asked")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-t", "--threads", type=int, default=None)
    parser.add_argument("-ngl", "--gpu-layers", type=int, default=None)
    parser.add_argument("-c", "--ctx-size", type=int, default=None, help="the context (it caps dynamic's scale)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path, help="write every answer here")
    args = parser.parse_args()
    if args.model is None:
        from yarn_cli.default_model import default_model_path

        args.model = str(default_model_path())
    model = open_model(args.model)
    sizes = parse_lengths(args.sizes, "--sizes")
    options = LoadOptions(n_ctx=args.ctx_size or max(sizes) + 256, n_threads=args.threads, n_gpu_layers=args.gpu_layers)
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    sampling = Sampling(temp=0.0)
    with vocabulary(model) as vocab:
        sample = " ".join([GARBAGE] * 200)
        chars_per_token = len(sample) / len(vocab.tokenize(sample, add_bos=False))
    rng = random.Random(args.seed)
    keys = [rng.randint(10000, 99999) for _ in range(args.trials)]
    folder = Path(tempfile.mkdtemp(prefix="dynamic-chat-"))
    x4 = convert_file(model.path, ConvertRequest(factor=4.0), output=folder / "x4.gguf").outputs[0].path
    print(
        f"machine: {platform.processor() or platform.machine()}; model {model.path.name} (native "
        f"{model.original_context or model.context_length}); sizes {sizes}; {args.trials} trials",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    walls: dict[str, list[float]] = {m: [] for m in modes}
    for trial, key in enumerate(keys):
        order = modes if trial % 2 == 0 else modes[::-1]
        for mode in order:
            started = time.perf_counter()
            session = open_session(mode, model, x4, options, sampling)
            try:
                asked = run_conversation(session, sizes, key, chars_per_token, random.Random(args.seed * 1000 + trial))
            finally:
                session.llm.close()
            walls[mode].append(time.perf_counter() - started)
            for row in asked:
                records.append({"trial": trial, "mode": mode, "key": key, **row})
            if args.json:  # after every conversation: a run stopped early keeps what it measured
                args.json.write_text(json.dumps({"sizes": sizes, "records": records, "walls": walls}, indent=2))
            marks = " ".join(f"{r['size'] // 1024}k:{'ok' if r['correct'] else r['answer'][:24]!r}" for r in asked)
            print(f"trial {trial + 1} {mode:9} {walls[mode][-1]:7.1f} s  {marks}", flush=True)
    print(f"\n{'size':>6} " + " ".join(f"{m:>22}" for m in modes))
    for size in sizes:
        cells = []
        for mode in modes:
            rows = [r for r in records if r["mode"] == mode and r["size"] == size]
            right = sum(r["correct"] for r in rows)
            scales = sorted({r["scale"] for r in rows}, key=lambda s: s or 0)  # dynamic's choice at this size
            scale = "/".join("x1" if s is None else f"x{s:g}" for s in scales) if mode == "dynamic" else ""
            seconds = statistics.median(r["seconds"] for r in rows)
            cells.append(f"{right}/{len(rows)} {seconds:6.1f}s {scale:>6}")
        print(f"{size // 1024:>5}k " + " ".join(f"{c:>22}" for c in cells))
    print("median conversation time: " + ", ".join(f"{m} {statistics.median(w):.1f} s" for m, w in walls.items()))


if __name__ == "__main__":
    main()
