"""A passkey run resumed from its --json record: only the missing trials run, never another model's or seed's.

The record names the model by its header's hash, so a file converted since (even in place, same
size) is another model; a damaged record is refused before any trial runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TEXT, assert_drawn_png, error_line

from yarn_cli.conversion import ConvertRequest, convert_file


@pytest.mark.slow
def test_resume_runs_only_the_missing_trials(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    record_path = tmp_path / "tiny.json"
    first = run_cli("passkey", tiny_model, "--lengths", "600", "--trials", "2", "--json", record_path)
    assert first.returncode == 0, first.stderr
    before = json.loads(record_path.read_text())["trials"]
    second = run_cli(
        "passkey", tiny_model, "--lengths", "600", "--trials", "3", "--compare", "as-is,yarn:2",
        "--json", record_path, "--csv", tmp_path / "t.csv", "--plot", tmp_path / "t.png",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "Fatal Python error" not in second.stderr
    assert_drawn_png(tmp_path / "t.png")
    assert "Resuming" in second.stderr and "2 trials already done" in second.stderr
    after = json.loads(record_path.read_text())["trials"]
    assert len(after) == 6
    assert [t for t in after if t["variant"] == "as-is" and t["index"] < 2] == before  # kept, not re-run
    assert len((tmp_path / "t.csv").read_text().strip().splitlines()) == 7
    other_seed = run_cli("passkey", tiny_model, "--lengths", "600", "--seed", "9", "--json", record_path)
    assert other_seed.returncode == 1
    assert "holds a run with other --seed, --depths or answer length" in error_line(other_seed)


def passkey(run_cli, model: Path, *extra: str):
    return run_cli("passkey", model, "--lengths", "400", "--trials", "1", "-t", "2", *extra)


@pytest.mark.slow
def test_a_resume_never_adopts_another_models_trials(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    x2 = convert_file(tiny_model, ConvertRequest(factor=2.0)).outputs[0].path
    x4 = convert_file(tiny_model, ConvertRequest(factor=4.0)).outputs[0].path
    assert x2.stat().st_size == x4.stat().st_size  # the old identity, (size, architecture), was the same
    first = passkey(run_cli, x2, "--json", "run.json")
    assert first.returncode == 0, first.stderr
    record = tmp_path / "run.json"
    saved = record.read_bytes()
    assert json.loads(saved)["model"]["header_sha256"]
    other = passkey(run_cli, x4, "--json", "run.json")
    assert other.returncode == 1
    assert "holds a run of another model" in error_line(other)
    reseeded = passkey(run_cli, x2, "--json", "run.json", "--seed", "5")
    assert "other --seed, --depths or answer length" in error_line(reseeded)
    assert record.read_bytes() == saved
    resumed = passkey(run_cli, x2, "--json", "run.json")
    assert resumed.returncode == 0 and "1 trials already done" in resumed.stderr


@pytest.mark.slow
def test_a_damaged_run_is_refused_before_any_trial(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    assert passkey(run_cli, tiny_model, "--json", "run.json").returncode == 0
    record = tmp_path / "run.json"
    good = json.loads(record.read_text())
    damages = [
        ("index", "x"), ("correct", "no"), ("depth", float("nan")), ("depth", "deep"), ("length", True),
        ("answer", 1.5), ("key", None),
    ]  # fmt: skip
    for field, value in damages:
        run = json.loads(json.dumps(good))
        run["trials"][0][field] = value
        record.write_text(json.dumps(run))
        result = passkey(run_cli, tiny_model, "--json", "run.json", "--lengths", "400,500")  # one more length to run
        assert result.returncode == 1, (field, value)
        assert f"run.json exists but is not a passkey run (a trial's '{field}' is " in error_line(result)
        assert record.read_text() == json.dumps(run)  # refused before a trial ran: the record as it was
    record.write_text(json.dumps(dict(good, model=[1])))
    assert "is not a passkey run (its model is [1])" in error_line(passkey(run_cli, tiny_model, "--json", "run.json"))


@pytest.mark.slow
def test_a_file_converted_in_place_is_another_model_to_a_resume(run_cli, tiny_model: Path) -> None:
    assert passkey(run_cli, tiny_model, "--json", "run.json").returncode == 0
    assert run_cli("convert", tiny_model, "--in-place", "--factor", "2").returncode == 0
    assert "holds a run of another model" in error_line(passkey(run_cli, tiny_model, "--json", "run.json"))


def test_perplexity_records_the_same_identity(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    result = run_cli("perplexity", tiny_model, "--text", TEXT, "--contexts", "64", "--json", "p.json")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "p.json").read_text())
    passkey(run_cli, tiny_model, "--json", "k.json")
    assert record["model"]["header_sha256"] == json.loads((tmp_path / "k.json").read_text())["model"]["header_sha256"]
