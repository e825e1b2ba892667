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
import subprocess
import tempfile
from pathlib import Path

from served_checks import CHAPTER, ServerProcess, compare_answers, show, yarn

QUESTION = "Complete the sentence: The capital of France is"


def llama_server(binary: str, model: Path, ctx: int, threads: int, port: int) -> ServerProcess:
    command = [binary, "-m", str(model), "-c", str(ctx), "-t", str(threads), "--host", "127.0.0.1",
               "--port", str(port), "--no-webui", "-np", "1"]  # fmt: skip
    return ServerProcess("llama-server", command, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--threads", default="2")
    parser.add_argument("--text", type=Path, default=CHAPTER)
    args = parser.parse_args()
    from yarn_cli.default_model import default_model_path

    model = default_model_path()
    work = Path(tempfile.mkdtemp(prefix="llama-server-check-"))
    version = subprocess.run([args.llama_server, "--version"], capture_output=True, text=True)
    print(f"llama-server: {(version.stdout + version.stderr).strip().splitlines()[0]}; model {model.name}")

    server = llama_server(args.llama_server, model, 4096, int(args.threads), 18080)
    try:
        served = yarn("passkey", "--server", server.url, "--lengths", "1k,2k", "--trials", "2", "--json",
                      "served.json", cwd=work)  # fmt: skip
        show(f"passkey --server {server.url} --lengths 1k,2k --trials 2", served)
        local = yarn("passkey", "--lengths", "1k,2k", "--trials", "2", "--json", "local.json", cwd=work)
        print(f"local exit {local.returncode}")
        compare_answers(work / "served.json", work / "local.json")
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
        server = llama_server(args.llama_server, path, 12288, int(args.threads), 18081)
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
