"""yarn-cli against a real llama-server (llama.cpp's own HTTP server): what each served command does.

Starts llama-server on 127.0.0.1 with the embedded SmolLM2-135M (and with a YaRN x2 file that
yarn-cli writes), runs the served commands against it as a user would, and prints what they
said: passkey answers against the same seeded trials run locally, the refusal of a prompt longer
than the server's context, chat with the context read from /props, perplexity's refusal (llama-server
gives no prompt log-probabilities), and a 10k-token passkey on the x2 file against the original.

    python benchmarks/llama_server_check.py --llama-server /path/to/llama-server [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Complete the sentence: The capital of France is"


class LlamaServer:
    def __init__(self, binary: str, model: Path, ctx: int, threads: int, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [binary, "-m", str(model), "-c", str(ctx), "-t", str(threads), "--host", "127.0.0.1",
             "--port", str(port), "--no-webui", "-np", "1"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.log.seek(0)
        raise RuntimeError(f"llama-server did not start: {self.log.read().decode()[-1500:]}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--threads", default="2")
    parser.add_argument("--text", type=Path, default=ROOT / "tests" / "data" / "pride-and-prejudice-chapter-1.txt")
    args = parser.parse_args()
    from yarn_cli.default_model import default_model_path

    model = default_model_path()
    work = Path(tempfile.mkdtemp(prefix="llama-server-check-"))
    version = subprocess.run([args.llama_server, "--version"], capture_output=True, text=True)
    print(f"llama-server: {(version.stdout + version.stderr).strip().splitlines()[0]}; model {model.name}")

    server = LlamaServer(args.llama_server, model, 4096, int(args.threads), 18080)
    try:
        served = yarn("passkey", "--server", server.url, "--lengths", "1k,2k", "--trials", "2", "--json",
                      "served.json", cwd=work)  # fmt: skip
        show(f"passkey --server {server.url} --lengths 1k,2k --trials 2", served)
        local = yarn("passkey", "--lengths", "1k,2k", "--trials", "2", "--json", "local.json", cwd=work)
        there, here = answers(work / "served.json"), answers(work / "local.json")
        same_keys = [a[:3] for a in there] == [a[:3] for a in here]
        same_text = there == here
        record = json.loads((work / "served.json").read_text())
        counts = [(t["prompt_tokens"], t["server_prompt_tokens"]) for t in record["trials"]]
        print(f"same keys as the local run: {same_keys}; same text after the key too: {same_text}")
        for a, b in zip(there, here, strict=True):
            if a != b:
                print(f"  length {a[0]} trial {a[1]}: served {a[3]!r}, local {b[3]!r}")
        print(f"(tokens sent, tokens the server counted): {counts}")
        print(f"tokenizer: {record['model']['tokenizer']}; local exit {local.returncode}")
        show(
            f"passkey --server {server.url} --lengths 6k --trials 1   (the server has -c 4096)",
            yarn("passkey", "--server", server.url, "--lengths", "6k", "--trials", "1", cwd=work),
        )
        show(
            f"chat --server {server.url} -p '{QUESTION}' --temp 0",
            yarn("chat", "--server", server.url, "-p", QUESTION, "--temp", "0", cwd=work),
        )
        show(
            f"perplexity --server {server.url} --text chapter-1.txt --contexts 256",
            yarn("perplexity", "--server", server.url, "--text", str(args.text), "--contexts", "256", cwd=work),
        )
    finally:
        server.stop()

    x2 = work / "smol-x2.gguf"
    converted = yarn("convert", str(model), str(x2), "--factor", "2", cwd=work)
    assert converted.returncode == 0, converted.stderr
    for label, path in (("original", model), ("yarn-x2", x2)):
        server = LlamaServer(args.llama_server, path, 12288, int(args.threads), 18081)
        try:
            args_10k = ["--tokenizer", str(path), "--lengths", "10k", "--trials", "2", "--seed", "1"]
            show(
                f"passkey --server {label}={server.url} {' '.join(args_10k[2:])}   (llama-server -c 12288)",
                yarn("passkey", "--server", f"{label}={server.url}", *args_10k, cwd=work),
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
