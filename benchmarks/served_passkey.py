"""The same passkey trials locally and over a server, and over the server with --parallel 1 against 4.

Starts llama-cpp-python's OpenAI-compatible server (``llama-cpp-python[server]``) on 127.0.0.1
with the model, then runs ``yarn-cli passkey`` locally, over the server with ``--parallel 1`` and
with ``--parallel 4``, alternating, ``--runs`` times. Prints the median wall time of each, the
ratios against the local run, trials per minute, and whether every run gave the same answers.

    python benchmarks/served_passkey.py [--model M.gguf] [--lengths 1k] [--trials 4] [--runs 3]

``--url URL`` uses a server that is already running instead (vLLM, llama-server with ``-np 4``),
serving the same model as ``--model``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from yarn_cli.default_model import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import LlamaServer  # the tests' own server starter


def passkey(args: list[str], record: Path) -> tuple[float, list[tuple[int, int, str]]]:
    record.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "yarn_cli", "passkey", *args, "--json", str(record)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    trials = json.loads(record.read_text())["trials"]
    return seconds, sorted((t["length"], t["index"], t["output"]) for t in trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--lengths", default="1k")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=None, help="A running server's /v1 URL, serving the same model.")
    args = parser.parse_args()
    model = args.model or default_model_path()
    common = ["--lengths", args.lengths, "--trials", str(args.trials)]
    server = None if args.url else LlamaServer(model, n_ctx=4096)
    url = args.url or server.url  # type: ignore[union-attr]
    setups = {
        "local": [str(model), *common, "-t", "2"],
        "server, --parallel 1": ["--server", url, "--tokenizer", str(model), *common],
        "server, --parallel 4": ["--server", url, "--tokenizer", str(model), *common, "--parallel", "4"],
    }
    times: dict[str, list[float]] = {name: [] for name in setups}
    outputs: dict[str, list[tuple[int, int, str]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                for name, setup in setups.items():
                    seconds, answers = passkey(setup, Path(tmp) / "run.json")
                    times[name].append(seconds)
                    outputs.setdefault(name, answers)
                    if answers != outputs[name]:
                        print(f"{name}: answers changed between runs")
    finally:
        if server is not None:
            server.stop()
    n = len(next(iter(outputs.values())))
    local = statistics.median(times["local"])
    print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}; model {model.name}")
    print(f"server: {url}" + ("" if args.url else " (llama-cpp-python's, started here)"))
    print(f"{n} trials at {args.lengths} tokens, median of {args.runs} runs (each a fresh yarn-cli process)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:22s} {median:7.2f} s  {n / median * 60:6.1f} trials/min  ratio to local {median / local:.2f}")
    same = all(answers == outputs["local"] for answers in outputs.values())
    print(f"answers identical everywhere: {same}")


if __name__ == "__main__":
    main()
