"""How close a run's estimate comes to its real time: passkey, perplexity and RULER on one model.

Each run goes through the library as the commands call it; the estimate is what the plan line
says before the first prompt (``on_start``), the real time is the wall clock from then to the end
of the run. Prints both and their ratio per run. Every run here is a measurement of its own, so
the machine's load at the time counts: run it on a quiet machine.

    python benchmarks/estimate_accuracy.py [--model M.gguf] [--text book.txt]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import yarn_cli.llama  # noqa: F401  (llama.cpp's libraries before numpy's)
from yarn_cli.evals.estimate import Estimate
from yarn_cli.evals.passkey import PasskeySettings
from yarn_cli.evals.passkey_run import run_passkey
from yarn_cli.evals.perplexity import PerplexitySettings, read_text
from yarn_cli.evals.perplexity_run import run_perplexity
from yarn_cli.evals.ruler import RulerSettings
from yarn_cli.evals.ruler_run import run_ruler
from yarn_cli.llama.llama_backend import LlamaBackend
from yarn_cli.llama.loader import LoadOptions
from yarn_cli.model import open_model
from yarn_cli.rope.variants import parse_variants

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pride-and-prejudice.txt"


class Clock:
    """The estimate given at the start, and the seconds from then to the end."""

    def __init__(self) -> None:
        self.estimate: Estimate | None = None
        self.started = 0.0

    def start(self, estimate: Estimate | None) -> None:
        self.estimate, self.started = estimate, time.perf_counter()

    def report(self, name: str) -> None:
        real = time.perf_counter() - self.started
        assert self.estimate is not None
        said = self.estimate.total_seconds
        print(f"{name:46} estimate {said:7.1f} s   real {real:7.1f} s   real/estimate {real / said:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--text", type=Path, default=SHARED_TEXT, help="a long text for perplexity")
    args = parser.parse_args()
    model = open_model(args.model)
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}; "
          f"model {model.path.name}")  # fmt: skip

    def backend(compare: str) -> LlamaBackend:
        return LlamaBackend(model, parse_variants(compare, model.rope), LoadOptions())

    clock = Clock()
    with backend("as-is") as b:
        run_passkey(b, PasskeySettings(lengths=[1024, 2048, 4096, 8192], trials=2, seed=0),
                    on_start=lambda tokens, trials, resumed, estimate: clock.start(estimate))  # fmt: skip
        clock.report("passkey 1k,2k,4k,8k x 2 trials")
    with backend("none,yarn:2") as b:
        settings = PerplexitySettings(contexts=[2048, 4096, 8192])
        run_perplexity(b, read_text(args.text), settings, on_start=lambda tokens, estimate: clock.start(estimate))
        clock.report("perplexity 2k,4k,8k, none and yarn:2")
    with backend("none,yarn:2") as b:
        settings = PerplexitySettings(contexts=[2048], reference="none")
        run_perplexity(b, read_text(args.text), settings, on_start=lambda tokens, estimate: clock.start(estimate))
        clock.report("perplexity 2k, yarn:2 --reference none")
    with backend("as-is") as b:
        ruler = RulerSettings(lengths=[1024, 4096], tasks=["niah_single_1", "vt", "fwe"], samples=2, seed=0)
        run_ruler(b, ruler, None, on_start=lambda tokens, count, resumed, estimate: clock.start(estimate))
        clock.report("ruler niah_single_1,vt,fwe at 1k,4k x 2 samples")


if __name__ == "__main__":
    main()
