"""One check of yarn-cli on a GPU build of llama-cpp-python (CUDA, Metal, Vulkan), in under 10 minutes.

Every step runs in its own process, so a crash (a segfault in a native library) is a finding of
that step, not the end of the check; the report is rewritten after each step, so a check cut
short still says what it saw. Steps, most important first:

1. environment: the devices llama.cpp sees and their memory, versions;
2. load order: a model loaded by a program that imports numpy first (the order that crashed
   every load on a CUDA build), llama.cpp first as the control; if numpy first crashes, the same
   again with OPENBLAS_NUM_THREADS=1, GGML_CUDA_NO_PINNED=1 and libgomp preloaded, to narrow it;
3. chat: the README's answer, the settings line (backend, offloaded layers), --verbose device lines;
4. YaRN x4 baked into a file against the same scaling at run time: identical log-likelihoods;
5. chat against bare llama-cpp-python, both with every layer on the GPU (benchmarks/chat_speed.py);
6. passkey and perplexity through the CLI with --json and --plot: exit codes, the PNGs, tokens/s,
   and perplexity's tokens/s against passkey's (target: at least half);
7. perplexity's time split on the GPU (benchmarks/perplexity_overhead.py);
8. the test suite, with the time left.

    python benchmarks/gpu_check.py --out DIR [--budget 570] [--lengths 4k,8k,16k,32k] [--trials 4]

It also runs on a CPU build (slowly, with smaller --lengths), which is how it is tested. A step whose
modules the machine lacks says so rather than stopping the check (without matplotlib, no --plot;
without llama-cpp-python's server, no served-model tests; a test file whose imports fail is an
error of its own while the others run); benchmarks/gpu_stage_extras.sh stages those modules for
an offline machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Complete the sentence: The capital of France is"
TEXT_CANDIDATES = [ROOT.parent / "shared" / "data" / "pride-and-prejudice.txt"]


class Check:
    def __init__(self, out: Path, budget: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget
        self.report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(
        self, args: list[str], timeout: float, env: dict[str, str] | None = None, keep: int = 8000
    ) -> dict[str, Any]:
        """A child process, its exit code (negative: the signal that killed it) and its output's tail."""
        timeout = max(5.0, min(timeout, self.left()))
        began = time.monotonic()
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, cwd=self.work, env={**os.environ, **(env or {})}
            )
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code = "timeout"
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return {
            "rc": code,
            "seconds": round(time.monotonic() - began, 2),
            "stdout": stdout[-keep:],
            "stderr": stderr[-4000:],
        }

    def step(self, name: str, work: Callable[[], dict[str, Any]]) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ({self.left():.0f} s left)", flush=True)
        if self.left() < 10:
            self.report["steps"][name] = {"ok": False, "skipped": "no time left"}
        else:
            try:
                self.report["steps"][name] = work()
            except Exception as exc:  # noqa: BLE001  (the check goes on; the failure is this step's finding)
                self.report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.save()

    def save(self) -> None:
        self.report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        (self.out / "gpu-check.json").write_text(json.dumps(self.report, indent=2))
        (self.out / "gpu-check.md").write_text(summary(self.report))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yarn_cli", *args]


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


ENVIRONMENT = """
import json, platform, sys
import importlib.util, yarn_cli.llama, llama_cpp, numpy
from yarn_cli.llama.devices import devices
print(json.dumps({
    "missing_modules": [m for m in ("matplotlib", "pytest", "jinja2", "httpx") if importlib.util.find_spec(m) is None],
    "python": sys.version.split()[0], "platform": platform.platform(),
    "llama_cpp_python": llama_cpp.__version__, "numpy": numpy.__version__,
    "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    "devices": [{"name": d.name, "description": d.description, "kind": d.kind,
                 "free_gib": round(d.free / 2**30, 2), "total_gib": round(d.total / 2**30, 2)} for d in devices()],
}))
"""


def environment(check: Check) -> dict[str, Any]:
    result = check.run(python(ENVIRONMENT), 120)
    found: dict[str, Any] = {"ok": result["rc"] == 0}
    if result["rc"] == 0:
        found.update(json.loads(result["stdout"].strip().splitlines()[-1]))
    else:
        found["child"] = result
    smi = shutil.which("nvidia-smi")
    if smi:
        found["nvidia_smi"] = check.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv"], 30)[
            "stdout"
        ].strip()
    return found


LOAD = """
import sys, time
{first}
t = time.perf_counter()
from yarn_cli.default_model import default_model_path
from yarn_cli.model import open_model
from yarn_cli.llama.loader import LoadOptions, load_model
llm, effective = load_model(open_model(default_model_path()), LoadOptions(n_ctx=512))
reply = llm.create_completion("The capital of France is", max_tokens=4, temperature=0.0)["choices"][0]["text"]
llm.close()
print(effective.describe(), "|", repr(reply), "|", round(time.perf_counter() - t, 2), "s")
"""


def load_order(check: Check) -> dict[str, Any]:
    numpy_first = LOAD.format(first="import numpy")
    found: dict[str, Any] = {
        "llama_cpp_first": check.run(python(LOAD.format(first="import yarn_cli.llama")), 120),
        "numpy_first": check.run(python(numpy_first), 120),
        "gguf_first": check.run(python(LOAD.format(first="import gguf")), 120),
    }
    if found["numpy_first"]["rc"] != 0:  # narrow the cause down
        variants: dict[str, dict[str, str]] = {
            "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
            "GGML_CUDA_NO_PINNED=1": {"GGML_CUDA_NO_PINNED": "1"},
        }
        gomp = next(
            (line.split("=>")[-1].strip() for line in _ldconfig() if "libgomp.so.1 " in line and "x86-64" in line), None
        )
        if gomp:
            variants["LD_PRELOAD=libgomp"] = {"LD_PRELOAD": gomp}
        for name, env in variants.items():
            found[f"numpy_first with {name}"] = check.run(python(numpy_first), 120, env=env)
        gdb = shutil.which("gdb")
        if gdb:
            trace = check.run([gdb, "-batch", "-ex", "run", "-ex", "bt 30", "--args", *python(numpy_first)], 180)
            output = trace["stdout"]
            found["numpy_first gdb backtrace"] = output[output.find("received signal") :][:3000]
    found["ok"] = all(v["rc"] == 0 for k, v in found.items() if isinstance(v, dict) and "rc" in v)
    return found


def _ldconfig() -> list[str]:
    with_path = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        return subprocess.run([with_path, "-p"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


def chat(check: Check) -> dict[str, Any]:
    answer = check.run(cli("chat", "--temp", "0", "-p", QUESTION), 180)
    verbose = check.run(cli("chat", "--temp", "0", "-p", QUESTION, "-n", "4", "--verbose"), 180)
    settings = next((line for line in answer["stderr"].splitlines() if line.startswith("llama.cpp:")), "")
    offloaded = re.search(r"(\w+) \((\d+)/(\d+) layers on GPU\)", settings)
    device_lines = [
        line
        for line in verbose["stderr"].splitlines()
        if re.search(r"(CUDA|MTL|Metal|Vulkan)\d* (model buffer|KV buffer|compute buffer)|using device", line)
    ]
    return {
        "ok": answer["rc"] == 0 and "Paris" in answer["stdout"] and bool(offloaded) and bool(device_lines),
        "reply": answer["stdout"].strip(),
        "settings_line": settings,
        "layers_all_offloaded": bool(offloaded) and offloaded.group(2) == offloaded.group(3),
        "verbose_device_lines": device_lines[:12],
        "answer_run": {k: answer[k] for k in ("rc", "seconds")},
        "verbose_run": {k: verbose[k] for k in ("rc", "seconds")} | {"stderr_tail": verbose["stderr"][-800:]},
    }


YARN_FILE = """
import sys
import yarn_cli.llama
import numpy as np
from yarn_cli.conversion import ConvertRequest, convert_file
from yarn_cli.default_model import default_model_path
from yarn_cli.llama.evaluation import negative_log_likelihoods
from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variant

original = default_model_path()
converted = convert_file(original, ConvertRequest(factor=4.0), output=sys.argv[1]).outputs[0].path
tokens = list(range(1000, 3048))
def nll(path, scaling):
    llm, _ = load_model(open_model(path), LoadOptions(n_ctx=len(tokens), scaling=scaling))
    try:
        return negative_log_likelihoods(llm, tokens)
    finally:
        llm.close()
rope = open_model(original).rope
baked = nll(converted, None)
runtime = nll(original, parse_variant("yarn:4").runtime(len(tokens), rope))
plain = nll(original, None)
print(int(np.array_equal(baked, runtime)), float(np.max(np.abs(baked - runtime))), float(np.max(np.abs(baked - plain))))
"""


def yarn_file(check: Check) -> dict[str, Any]:
    result = check.run(python(YARN_FILE, str(check.work / "x4.gguf")), 240)
    if result["rc"] != 0:
        return {"ok": False, "child": result}
    same, worst, against_plain = result["stdout"].split()
    return {
        "ok": same == "1" and float(against_plain) > 0,
        "file_equals_runtime_bit_for_bit": same == "1",
        "max_abs_nll_difference": float(worst),
        "max_abs_nll_difference_to_unscaled": float(against_plain),
    }


def chat_speed(check: Check) -> dict[str, Any]:
    result = check.run([sys.executable, str(ROOT / "benchmarks" / "chat_speed.py"), "--runs", "3"], 240)
    return {"ok": result["rc"] == 0, "output": result["stdout"][-1500:], "rc": result["rc"]}


def evaluations(check: Check, lengths: str, trials: int, text: Path | None) -> dict[str, Any]:
    # Without matplotlib --plot is refused; the speeds and the clean exit are still worth having.
    plots = importlib.util.find_spec("matplotlib") is not None
    found: dict[str, Any] = {} if plots else {"plots": "left out: matplotlib is not installed"}
    passkey = check.run(
        cli("passkey", "default", "--lengths", lengths, "--trials", str(trials),
            "--compare", "none,yarn:4,dynamic-yarn", "--json", "passkey.json", *_plot("passkey", plots)),
        240,
    )  # fmt: skip
    found["passkey"] = _evaluation(check, passkey, "passkey", plots)
    if text is None:
        found["perplexity"] = {"ok": False, "skipped": "no long text: pass --text"}
    else:
        perplexity = check.run(
            cli("perplexity", "default", "--text", str(text), "--contexts", lengths,
                "--compare", "none,yarn:4,dynamic-yarn", "--json", "perplexity.json", *_plot("perplexity", plots)),
            240,
        )  # fmt: skip
        found["perplexity"] = _evaluation(check, perplexity, "perplexity", plots)
    rates = [found[k].get("tokens_per_s") for k in ("passkey", "perplexity")]
    if all(rates):
        found["perplexity_over_passkey_tokens_per_s"] = round(rates[1] / rates[0], 3)
        found["target_half_of_passkey_met"] = rates[1] / rates[0] >= 0.5
    found["ok"] = all(found[k].get("ok") for k in ("passkey", "perplexity"))
    return found


def _plot(name: str, plots: bool) -> list[str]:
    return ["--plot", f"{name}.png"] if plots else []


def _evaluation(check: Check, result: dict[str, Any], name: str, plots: bool) -> dict[str, Any]:
    record_path, png = check.work / f"{name}.json", check.work / f"{name}.png"
    found: dict[str, Any] = {"rc": result["rc"], "seconds": result["seconds"], "stdout": result["stdout"][-2500:]}
    if result["rc"] != 0:
        found["stderr"] = result["stderr"][-1500:]
    found["png_written"] = png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    if png.is_file():
        shutil.copy(png, check.out / png.name)
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        seconds = record.get("seconds") or sum(t.get("seconds", 0) for t in record.get("trials", []))
        found["evaluated_tokens"] = record.get("evaluated_tokens")
        found["seconds_in_record"] = seconds
        if seconds:
            found["tokens_per_s"] = round(record["evaluated_tokens"] / seconds)
        for key in ("decode_seconds", "scoring_seconds", "passkey_context", "results"):
            if key in record:
                found[key] = record[key]
    found["ok"] = result["rc"] == 0 and (found["png_written"] or not plots)
    return found


def perplexity_overhead(check: Check, lengths: str, text: Path | None) -> dict[str, Any]:
    if text is None:
        return {"ok": False, "skipped": "no long text: pass --text"}
    script = str(ROOT / "benchmarks" / "perplexity_overhead.py")
    sizes = lengths.split(",")
    result = check.run([sys.executable, script, "--text", str(text), "--window", sizes[-1],
                        "--contexts", ",".join(sizes[-2:]), "--compare", "none,yarn:4", "--rounds", "2"],
                       240)  # fmt: skip
    return {"ok": result["rc"] == 0, "output": result["stdout"][-2500:], "rc": result["rc"]}


def test_suite(check: Check) -> dict[str, Any]:
    if importlib.util.find_spec("pytest") is None:
        return {"ok": False, "skipped": "pytest is not installed"}
    budget = check.left() - 15
    # A module the machine lacks (hypothesis, say) fails its test file's collection, not the whole run.
    # One line per test (-v), so a run cut short by the budget still says which tests passed and failed.
    args = [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
    served = check.run(python("import httpx, uvicorn, llama_cpp.server.app"), 60)["rc"] == 0
    if not served:  # the served-model tests start llama-cpp-python's own server
        args += [f"--ignore={path}" for path in sorted((ROOT / "tests").glob("test_served_*.py"))]
    result = check.run([*args, str(ROOT / "tests")], budget, keep=10**8)
    (check.out / "tests.log").write_text(result["stdout"] + result["stderr"])
    lines = result["stdout"].splitlines()
    outcome: dict[str, list[str]] = {"PASSED": [], "FAILED": [], "ERROR": [], "SKIPPED": []}
    for line in lines:  # "tests/test_x.py::test_y[-t 2] PASSED   [ 12%]"
        found = re.match(r"(tests/\S+?::.+?) (PASSED|FAILED|ERROR|SKIPPED)\b", line)
        if found:
            outcome[found.group(2)].append(found.group(1))
    return {
        "ok": result["rc"] == 0,
        "rc": result["rc"],
        "seconds": result["seconds"],
        "finished": result["rc"] != "timeout",
        "summary": lines[-1] if lines else "",
        "passed": len(outcome["PASSED"]),
        "skipped": len(outcome["SKIPPED"]),
        "failed": (outcome["FAILED"] + outcome["ERROR"])[:40],
        "collection_errors": [line for line in lines if line.startswith("ERROR ") and "::" not in line][:20],
        "served_tests": "run" if served else "left out: llama-cpp-python[server] or httpx not installed",
    }


def summary(report: dict[str, Any]) -> str:
    lines = [f"# yarn-cli GPU check ({report['started']} to {report.get('finished', '?')})", ""]
    env = report["steps"].get("environment", {})
    if env:
        devices = ", ".join(f"{d['name']} {d['description']} ({d['total_gib']} GiB)" for d in env.get("devices", []))
        lines += [
            f"- llama-cpp-python {env.get('llama_cpp_python')}, numpy {env.get('numpy')}, Python {env.get('python')}",
            f"- GPU offload: {env.get('gpu_offload')}; devices: {devices}",
            "",
        ]
    lines += ["| step | ok | details |", "|---|---|---|"]
    for name, step in report["steps"].items():
        if name == "environment":
            continue
        details = {
            k: v
            for k, v in step.items()
            if k not in ("ok", "output", "stdout", "stderr", "child", "results", "verbose_device_lines")
            and not isinstance(v, dict)
        }
        lines.append(f"| {name} | {step.get('ok')} | {json.dumps(details)[:600]} |")
    for name in ("chat_speed", "perplexity_overhead"):
        if report["steps"].get(name, {}).get("output"):
            lines += ["", f"## {name}", "", "```", report["steps"][name]["output"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--budget", type=float, default=570, help="seconds for the whole check")
    parser.add_argument("--lengths", default="4k,8k,16k,32k", help="passkey lengths and perplexity contexts")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--text", type=Path, help="a long UTF-8 text for perplexity")
    parser.add_argument("--skip", default="", help="steps to leave out, comma-separated (e.g. tests)")
    args = parser.parse_args()
    # every step runs in a folder of its own: a relative --text must not depend on where that is
    text = args.text.resolve() if args.text else next((p for p in TEXT_CANDIDATES if p.is_file()), None)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget)
    check.report["machine"] = {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    skip = set(filter(None, args.skip.split(",")))
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("environment", lambda: environment(check)),
        ("load_order", lambda: load_order(check)),
        ("chat", lambda: chat(check)),
        ("yarn_file_vs_runtime", lambda: yarn_file(check)),
        ("chat_speed", lambda: chat_speed(check)),
        ("passkey_perplexity", lambda: evaluations(check, args.lengths, args.trials, text)),
        ("perplexity_overhead", lambda: perplexity_overhead(check, args.lengths, text)),
        ("tests", lambda: test_suite(check)),
    ]
    for name, work in steps:
        if name not in skip:
            check.step(name, work)
    print((args.out / "gpu-check.md").read_text())


if __name__ == "__main__":
    main()
