"""``yarn-cli tune``: every candidate measured as the other commands measure it, the rule, the record, --write.

On the tiny generated model (native context 256, tuned to 512) in the real llama.cpp, so the whole
tune runs in the suite; the figures are checked against ``perplexity`` and ``passkey`` run apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import assert_drawn_png, error_line

from yarn_cli.evals.tune import Candidate, choose, default_candidates, front

TEXT = (Path(__file__).parent / "data" / "pride-and-prejudice-chapter-1.txt").read_text()


def _c(variant: str, kl: float | None, ppl: float | None) -> Candidate:
    return Candidate(variant, short_kl=kl, long_perplexity=ppl)


def test_the_rule_takes_the_lowest_perplexity_within_the_kl_budget_and_is_never_dominated() -> None:
    candidates = [
        _c("linear:2", 0.30, 30.0),  # the lowest perplexity, but far over the budget
        _c("yarn:2", 0.03, 31.0),
        _c("ntk-by-parts:2", 0.01, 31.5),
        _c("ntk:2", 0.04, 33.0),  # dominated by yarn:2
        _c("dynamic-yarn", 0.0, 31.0),
    ]
    choice = choose(candidates, 0.05, 512, 256, static=False)
    static = choose(candidates, 0.05, 512, 256, static=True)
    assert choice.variant == "dynamic-yarn"  # ties yarn:2 on perplexity, costs nothing short
    assert static.variant == "yarn:2" and "31.000" in static.why and "0.05" in static.why
    assert set(front(candidates)) == {"linear:2", "dynamic-yarn"}
    assert choice.variant in front(candidates)
    tight = choose(candidates, 0.005, 512, 256, static=True)
    assert tight.variant is None and "ntk-by-parts:2's 0.0100" in tight.why


def test_default_candidates_are_the_papers_methods_at_n_over_native() -> None:
    names = default_candidates(16384, 8192)
    assert names[:4] == ["linear:2", "ntk:2", "ntk-by-parts:2", "yarn:2"]
    assert "dynamic-yarn" in names and "dynamic-ntk" in names and "yarn:2@0.9" in names


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One whole tune on the tiny model, its record, and the same figures from perplexity and passkey."""
    import subprocess
    import sys

    from ggufs import write_tiny_llama

    folder = tmp_path_factory.mktemp("tune")
    model = write_tiny_llama(folder / "tiny.gguf")
    (folder / "t.txt").write_text(TEXT)

    def cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "yarn_cli", *map(str, args)], cwd=folder, capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    tune = cli("tune", model, "--context", "512", "--text", "t.txt", "--json", "tune.json", "--plot", "tune.png",
               "--write", "tuned.gguf", "--trials", "2")  # fmt: skip
    record = json.loads((folder / "tune.json").read_text()) if (folder / "tune.json").exists() else None
    return {"folder": folder, "model": model, "tune": tune, "cli": cli, "record": record}


def test_a_tune_measures_chooses_and_writes(tuned: dict[str, object]) -> None:
    tune = tuned["tune"]
    assert tune.returncode == 0, tune.stderr  # type: ignore[attr-defined]
    record = tuned["record"]
    assert isinstance(record, dict)
    names = [c["variant"] for c in record["candidates"]]
    assert names[:4] == ["linear:2", "ntk:2", "ntk-by-parts:2", "yarn:2"]
    for c in record["candidates"]:
        assert c["short_kl"] is not None and c["short_top1"] is not None
        assert c["long_perplexity"] is not None or c["stopped"]
        assert "short" in c["cost"] and c["cost"]["short"]["tokens"] >= 0
    chosen = {record["choice"]["variant"], record["best_static"]["variant"]}
    assert all(next(c for c in record["candidates"] if c["variant"] == v)["passkey"] is not None
               for v in chosen if v)  # fmt: skip
    assert record["choice"]["variant"] in record["front"]
    dynamic = next(c for c in record["candidates"] if c["variant"] == "dynamic-yarn")
    assert dynamic["short_kl"] == 0.0 and dynamic["short_top1"] == 1.0  # within native: the unscaled model exactly
    out = tune.stdout  # type: ignore[attr-defined]
    assert "Ways to reach 512 tokens" in out and "Choice:" in out
    assert_drawn_png(tuned["folder"] / "tune.png")  # type: ignore[operator]
    assert (tuned["folder"] / "tuned.gguf").exists()  # type: ignore[operator]


def test_the_figures_are_those_perplexity_and_the_written_file_give(tuned: dict[str, object]) -> None:
    record, cli, folder = tuned["record"], tuned["cli"], tuned["folder"]
    assert isinstance(record, dict)
    static = record["best_static"]["variant"]
    candidate = next(c for c in record["candidates"] if c["variant"] == static)
    ppl = cli("perplexity", tuned["model"], "--text", "t.txt", "--contexts", "512", "--compare", static,  # type: ignore[operator]
              "--json", "p.json")  # fmt: skip
    assert ppl.returncode == 0, ppl.stderr
    figure = json.loads((folder / "p.json").read_text())["results"][0]["ppl"]  # type: ignore[operator]
    assert candidate["long_perplexity"] == pytest.approx(figure, rel=1e-9)
    kl = cli("perplexity", tuned["model"], "--text", "t.txt", "--contexts", "256", "--compare", static,  # type: ignore[operator]
             "--reference", "none", "--json", "k.json")  # fmt: skip
    assert kl.returncode == 0, kl.stderr
    row = next(r for r in json.loads((folder / "k.json").read_text())["results"] if r["variant"] == static)  # type: ignore[operator]
    assert candidate["short_kl"] == pytest.approx(row["kl_divergence"], rel=1e-9)
    written = cli("perplexity", "tuned.gguf", "--text", "t.txt", "--contexts", "512", "--json", "w.json")  # type: ignore[operator]
    assert written.returncode == 0, written.stderr
    as_written = json.loads((folder / "w.json").read_text())["results"][0]["ppl"]  # type: ignore[operator]
    assert as_written == pytest.approx(candidate["long_perplexity"], rel=1e-6)


def test_a_tune_resumes_without_measuring_again(tuned: dict[str, object]) -> None:
    again = tuned["cli"]("tune", tuned["model"], "--context", "512", "--text", "t.txt", "--json", "tune.json",  # type: ignore[operator]
                         "--trials", "2")  # fmt: skip
    assert again.returncode == 0, again.stderr
    record = json.loads((tuned["folder"] / "tune.json").read_text())  # type: ignore[operator]
    assert record["candidates"] == tuned["record"]["candidates"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--context", "256"], "within the model's native 256 tokens"),
        (["--context", "100k"], "the text has"),
        (["--context", "512", "--candidates", "yarn:2,wobble:3"], "cannot read the variant 'wobble:3'"),
        (["--context", "512", "--server", "http://127.0.0.1:9/v1"], "a server fixes its scaling"),
        (["--context", "512", "--max-kl", "-1"], "--max-kl"),
    ],
)
def test_bad_input_is_one_line(run_cli, tiny_model: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "t.txt").write_text(TEXT)
    result = run_cli("tune", tiny_model, "--text", "t.txt", *args)
    assert result.returncode != 0
    assert expected in error_line(result)


def test_a_model_that_came_with_a_scaling_is_refused(run_cli, tmp_path: Path) -> None:
    from gguf import GGUFValueType
    from ggufs import write_tiny_llama

    keys = {
        "llama.rope.scaling.type": ("yarn", GGUFValueType.STRING),
        "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32),
        "llama.rope.scaling.original_context_length": (64, GGUFValueType.UINT32),
    }
    model = write_tiny_llama(tmp_path / "yarn.gguf", extra=keys, extra_with_rope=True)
    (tmp_path / "t.txt").write_text(TEXT)
    result = run_cli("tune", model, "--text", "t.txt", "--context", "512")
    assert result.returncode != 0
    assert "came with a RoPE scaling of its own" in error_line(result)


def test_an_interrupted_tune_names_no_choice(tiny_model: Path, tmp_path: Path) -> None:
    """Ctrl-C before every candidate is measured: the record keeps the measurements and chooses nothing."""
    from yarn_cli.cli.backends import local_backend
    from yarn_cli.evals.perplexity import Text
    from yarn_cli.evals.tune import TuneSettings
    from yarn_cli.evals.tune_run import run_tune
    from yarn_cli.llama.loader import LoadOptions

    stages: list[str] = []

    def on_stage(what: str, tokens: int, estimate: object) -> None:
        stages.append(what)
        if "perplexity at" in what and sum("perplexity at" in s for s in stages) == 2:
            raise KeyboardInterrupt  # while the second candidate is measured at N

    settings = TuneSettings(context=512, short_context=256, candidates=["yarn:2", "ntk:2", "linear:2"], trials=1)
    with local_backend(str(tiny_model), "none", LoadOptions(n_threads=2)) as backend:
        run = run_tune(backend, Text(tmp_path / "t.txt", TEXT), settings, json_path=tmp_path / "t.json",
                       on_stage=on_stage)  # fmt: skip
    assert run.interrupted and run.choice.variant is None and run.best_static.variant is None
    record = json.loads((tmp_path / "t.json").read_text())
    assert "choice" not in record and "best_static" not in record
    measured = {c["variant"]: c["long_perplexity"] for c in record["candidates"]}
    assert measured["yarn:2"] is not None and measured["ntk:2"] is None  # the first kept, the second not taken
