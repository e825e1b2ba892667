"""Start-up: how long yarn-cli takes to answer before it does any work, against an earlier checkout.

Each command runs as a whole process, the current tree and a baseline tree in turn (current,
baseline, current, ...), after a warm-up that writes Python's bytecode cache, as an installed
package has it. Prints per command the median wall time of each and the median of the paired
ratios, with two floors for scale: ``python -c pass`` and, for a one-shot chat, bare
llama-cpp-python doing the same (load, one chat completion).

    git worktree add /tmp/yarn-base <commit>
    python benchmarks/startup.py --baseline /tmp/yarn-base [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARE_CHAT = r"""
import sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, n_threads_batch=2, n_gpu_layers=0,
                      verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                 temperature=0.0, max_tokens=8)
print(out["choices"][0]["message"]["content"])
"""


# yarn-cli from a given tree, whichever is installed (an editable install's finder would answer first)
LAUNCH = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]; "
    "sys.argv[0] = 'yarn-cli'; from yarn_cli.__main__ import main; main()"
)


def timed(args: list[str], tree: Path | None) -> float:
    """Wall seconds of ``args`` (``yarn-cli ARGS`` from ``tree``, or a plain command when ``tree`` is None)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-c", LAUNCH, str(tree), *args] if tree is not None else args
    start = time.perf_counter()
    subprocess.run(command, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the version to compare with")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    from yarn_cli.default_model import default_model_path

    model = str(default_model_path())
    chat = ["chat", model, "-p", "What is the capital of France?", "-n", "8", "--temp", "0", "-c", "512",
            "-t", "2", "-ngl", "0"]  # fmt: skip
    commands = {
        "--version": ["--version"],
        "--help": ["--help"],
        "chat --help": ["chat", "--help"],
        "inspect": ["inspect", model],
        "one-shot chat": chat,
    }
    floors = {"python -c pass": [sys.executable, "-c", "pass"], "bare llama-cpp-python chat": [
        sys.executable, "-c", BARE_CHAT, model]}  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}; baseline {args.baseline}")  # fmt: skip
    print(f"{'command':28} {'current':>9} {'baseline':>9} {'ratio':>7}")
    for name, command in commands.items():
        for tree in (ROOT, args.baseline):  # warm-up: bytecode written, pages cached
            timed(command, tree)
        pairs = [(timed(command, ROOT), timed(command, args.baseline)) for _ in range(args.runs)]
        now = statistics.median(a for a, _ in pairs)
        before = statistics.median(b for _, b in pairs)
        ratio = statistics.median(a / b for a, b in pairs)
        print(f"{name:28} {now:8.3f}s {before:8.3f}s {ratio:7.3f}")
    for name, command in floors.items():
        timed(command, None)
        print(f"{name:28} {statistics.median(timed(command, None) for _ in range(args.runs)):8.3f}s")
    # the one-shot chat against bare llama-cpp-python, paired
    pairs = [(timed(chat, ROOT), timed(floors["bare llama-cpp-python chat"], None)) for _ in range(args.runs)]
    extra = statistics.median(a - b for a, b in pairs)
    print(f"one-shot chat over bare llama-cpp-python: {extra:+.3f} s (median of {args.runs} paired differences)")


if __name__ == "__main__":
    main()
