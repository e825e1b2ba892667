"""What the checks against real servers share: a server process, yarn-cli runs, their records.

Used by ``llama_server_check.py`` and ``vllm_check.py``; not a script of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "tests" / "data" / "pride-and-prejudice-chapter-1.txt"


class ServerProcess:
    """A server started on 127.0.0.1 and stopped by the check; its log is kept for a failed start."""

    def __init__(self, name: str, command: list[str], port: int, *, env: dict[str, str] | None = None,
                 start_seconds: float = 120) -> None:  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{name} did not start: {self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def yarn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "yarn_cli", *args], capture_output=True, text=True, cwd=cwd)


def show(title: str, result: subprocess.CompletedProcess[str]) -> None:
    print(f"\n$ yarn-cli {title}\n(exit {result.returncode})")
    if result.stdout.strip():
        print(result.stdout.rstrip()[-1500:])
    lines = [line for line in result.stderr.splitlines() if "%" not in line or "Error" in line]
    if lines:
        print("\n".join(lines[-8:]))


def answers(path: Path) -> list[tuple[int, int, int | None, str]]:
    """(length, trial, the key read from the answer, the answer's text), in trial order."""
    trials = json.loads(path.read_text())["trials"]
    return sorted((t["length"], t["index"], t["answer"], t["output"]) for t in trials)


def compare_answers(served: Path, local: Path) -> None:
    """Whether the served run found the same keys (and wrote the same text) as the local one."""
    there, here = answers(served), answers(local)
    record = json.loads(served.read_text())
    counts = [(t["prompt_tokens"], t["server_prompt_tokens"]) for t in record["trials"]]
    same_keys = [a[:3] for a in there] == [a[:3] for a in here]
    print(f"same keys as the local run: {same_keys}; same text after the key too: {there == here}")
    for a, b in zip(there, here, strict=True):
        if a != b:
            print(f"  length {a[0]} trial {a[1]}: served {a[3]!r}, local {b[3]!r}")
    print(f"(tokens sent, tokens the server counted): {counts}")
    print(f"tokenizer: {record['model']['tokenizer']}")


def perplexities(path: Path) -> dict[int, tuple[float, int]]:
    """Context -> (perplexity, tokens scored), from a ``perplexity --json`` record of one variant."""
    return {r["context"]: (r["ppl"], r["tokens"]) for r in json.loads(path.read_text())["results"]}


def compare_perplexities(served: Path, local: Path) -> None:
    if not served.is_file():
        print("  served: no record (the run failed; its error is above)")
        return
    record = json.loads(served.read_text())
    for label, why in {**record.get("truncated", {}), **record.get("unscored", {})}.items():
        print(f"  {label}: no figures: {why}")
    there, here = perplexities(served), perplexities(local)
    for context in sorted(there):
        (ppl, n), (ppl_local, n_local) = there[context], here[context]
        print(
            f"  context {context:,}: served {ppl:.3f} ({n:,} tokens), local {ppl_local:.3f} ({n_local:,} tokens), "
            f"ratio {ppl / ppl_local:.4f}"
        )
