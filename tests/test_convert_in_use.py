"""No in-place change under a running process: the processes that map a file or hold it open are found
(real child processes, through hard and symbolic links), and ``convert --in-place`` and ``--recover``
refuse, naming them, unless ``--force``; a real llama-cpp-python server keeps answering as before."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest
from ggufs import write_tiny_llama
from helpers import error_line, sha256, sweep
from servers import LlamaServer

import yarn_cli.files.holders
from yarn_cli.conversion import ConvertRequest, InUseError, convert_file
from yarn_cli.conversion.in_use import judge
from yarn_cli.files.faults import CRASH_ENV, CRASH_EXIT
from yarn_cli.files.holders import Holder, Holders, holders
from yarn_cli.gguf.inplace import undo_path

ROOT = Path(__file__).resolve().parent.parent
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="no /proc: nothing can be checked here")
pytestmark = NEEDS_PROC

CHILD = """
import mmap, sys, time
with open("/proc/self/comm", "w") as comm:
    comm.write(sys.argv[3])
f = open(sys.argv[1], "rb")
if sys.argv[2] == "maps":
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    f.close()  # the mapping alone keeps the file in use, as llama.cpp's does
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def child(path: Path, how: str, name: str = "holder", user: list[str] | None = None) -> Iterator[int]:
    """A process that maps ``path`` (``how="maps"``) or only holds it open (``"open"``), named ``name``."""
    process = subprocess.Popen(
        [*(user or []), sys.executable, "-c", CHILD, str(path), how, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process.pid
    finally:
        process.kill()
        process.wait()


# --- finding them -----------------------------------------------------------------------------


def test_a_process_that_maps_the_file_is_found(tiny_model: Path) -> None:
    with child(tiny_model, "maps", "mapper") as pid:
        assert holders(tiny_model).processes == [Holder(pid, "mapper", maps=True)]
    assert holders(tiny_model).processes == []


def test_a_process_that_only_holds_it_open_is_found(tiny_model: Path) -> None:
    with child(tiny_model, "open", "reader") as pid:
        assert holders(tiny_model).processes == [Holder(pid, "reader", maps=False)]


@pytest.mark.parametrize("how", ["maps", "open"])
def test_a_hard_link_or_a_symbolic_link_is_the_same_file(tiny_model: Path, how: str) -> None:
    hard = tiny_model.with_name("hard.gguf")
    hard.hardlink_to(tiny_model)
    link = tiny_model.with_name("link.gguf")
    link.symlink_to(tiny_model.name)
    with child(hard, how) as pid:
        for name in (tiny_model, link):
            assert [h.pid for h in holders(name).processes] == [pid]
    with child(link, how) as pid:
        assert [h.pid for h in holders(tiny_model).processes] == [pid]


def test_this_process_and_another_file_are_left_out(tiny_model: Path, tmp_path: Path) -> None:
    other = write_tiny_llama(tmp_path / "other.gguf")
    with tiny_model.open("rb"), child(other, "maps"):
        assert holders(tiny_model).processes == []


def test_the_kernel_confirms_nobody_else_holds_the_file(tiny_model: Path) -> None:
    with tiny_model.open("rb") as own, child(tiny_model, "open") as pid:
        assert holders(tiny_model, own.fileno()).processes == [Holder(pid, "holder", maps=False)]
    with tiny_model.open("rb") as own:
        assert holders(tiny_model, own.fileno()) == Holders()


def test_a_process_that_ends_mid_scan_is_skipped(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    with child(tiny_model, "maps") as pid:
        monkeypatch.setattr(yarn_cli.files.holders, "_pids", lambda: iter([ended.pid, pid]))
        assert [h.pid for h in holders(tiny_model).processes] == [pid]


def test_without_proc_nothing_is_checked_and_one_line_says_so(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yarn_cli.files.holders, "PROC", tmp_path / "no-proc")  # as on macOS or Windows
    assert holders(tiny_model) == Holders(checked=False)
    result = convert_file(tiny_model, ConvertRequest(factor=2.0), in_place=True)
    assert result.notes == [
        f"this system cannot say whether a running process maps {tiny_model} (no /proc); if a server runs it, "
        "stop the server first: an in-place change moves the data under it"
    ]
    assert result.outputs[0].action == "insert-range"


def test_processes_that_could_not_be_read_are_a_note_not_a_refusal(tmp_path: Path) -> None:
    note = judge(Holders(unreadable_users=["ollama", "root"]), tmp_path / "m.gguf", "changing it in place",
                 new_file_instead=True)  # fmt: skip
    assert note == (
        f"processes of ollama, root could not be checked for whether they map {tmp_path / 'm.gguf'}; if one of "
        "them runs this model, stop it first: an in-place change moves the data under it"
    )


def test_a_holder_the_kernel_reports_but_nobody_can_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InUseError) as refused:
        judge(Holders(unnamed=True), tmp_path / "m.gguf", "changing it in place", new_file_instead=False)
    assert str(refused.value) == (
        f"{tmp_path / 'm.gguf'} is in use: a process that cannot be inspected from here (another user's, or outside "
        "this container) has it open; changing it in place would move the data under it, which would go on, "
        "without an error, reading what then lies there: stop it first, or use --force to go ahead anyway"
    )


# --- another user's processes -----------------------------------------------------------------


def as_nobody() -> list[str]:
    """setpriv's prefix that runs a command as the user nobody; skips unless this runs as root."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running a process as another user needs root and setpriv")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import os"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this Python cannot run as nobody here")
    return prefix


SCAN = """
import json, sys
from dataclasses import asdict
sys.path.insert(0, sys.argv[1])
from yarn_cli.files.holders import holders
with open(sys.argv[2], "rb") as own:
    print(json.dumps([asdict(holders(sys.argv[2])), asdict(holders(sys.argv[2], own.fileno()))]))
"""


def scan_as(prefix: list[str], path: Path) -> list[dict[str, object]]:
    """``holders`` run by another user (only yarn_cli.files.holders is imported: the standard library alone)."""
    done = subprocess.run([*prefix, sys.executable, "-c", SCAN, str(ROOT), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every user can read (pytest's own are root's alone)."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o755)
        yield Path(name)


def test_another_users_process_cannot_be_read_and_is_not_guessed_at(shared_dir: Path) -> None:
    nobody = as_nobody()
    model = write_tiny_llama(shared_dir / "m.gguf")
    model.chmod(0o644)
    with child(model, "maps"):  # root's: nobody cannot read its maps
        without_lease, with_lease = scan_as(nobody, model)
        # nobody does not own the file, so no lease can be taken: the unread users are named instead
        for found in (without_lease, with_lease):
            assert found["processes"] == [] and found["unnamed"] is False
            assert "root" in found["unreadable_users"]  # type: ignore[operator]
        os.chown(model, 65534, 65534)  # now nobody owns it: the kernel says someone else holds it
        without_lease, with_lease = scan_as(nobody, model)
        assert "root" in without_lease["unreadable_users"]  # type: ignore[operator]
        assert with_lease == asdict(Holders(unnamed=True))
    without_lease, with_lease = scan_as(nobody, model)
    assert with_lease == asdict(Holders())  # the lease says nobody holds it: nothing is left unknown
    with child(model, "maps", user=nobody) as pid:  # a process of the same user is read and named
        assert scan_as(nobody, model)[1]["processes"] == [asdict(Holder(pid, "holder", maps=True))]


# --- convert refuses ---------------------------------------------------------------------------


def refusal(path: Path, pid: int, how: str, change: str, ways_out: str) -> str:
    return (
        f"Error: {path} is in use: pid {pid} (holder) {how}; {change} would move the data under it, which would "
        f"go on, without an error, reading what then lies there: {ways_out}"
    )


IN_PLACE_WAYS_OUT = (
    "stop it first, drop --in-place to write a new file (a reflink copy costs no space on XFS and btrfs), "
    "or use --force to go ahead anyway"
)


@pytest.mark.parametrize("how", sweep(["maps", "open"]))
@pytest.mark.parametrize("dry_run", sweep([False, True]), ids=["run", "dry-run"])
def test_convert_in_place_refuses_a_file_in_use(run_cli, tiny_model: Path, how: str, dry_run: bool) -> None:
    before = sha256(tiny_model)
    with child(tiny_model, how) as pid:
        args = ["--factor", "2", "--modelfile", *(["--dry-run"] if dry_run else [])]
        result = run_cli("convert", tiny_model, "--in-place", *args)
        assert result.returncode == 1
        assert error_line(result) == refusal(
            tiny_model, pid, "maps it" if how == "maps" else "has it open", "changing it in place", IN_PLACE_WAYS_OUT
        )
        assert sha256(tiny_model) == before
        assert sorted(p.name for p in tiny_model.parent.iterdir()) == ["tiny.gguf"]

        new_file = run_cli("convert", tiny_model, "--factor", "2")  # a new file takes nothing from under it
        assert new_file.returncode == 0, new_file.stderr
        forced = run_cli("convert", tiny_model, "--in-place", "--factor", "2", "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["warnings"] == []
        assert sha256(tiny_model) == sha256(tiny_model.with_name("tiny.yarn-2x.gguf"))


@pytest.mark.slow
def test_a_symbolic_link_in_use_is_refused_too(run_cli, tiny_model: Path) -> None:
    link = tiny_model.with_name("link.gguf")
    link.symlink_to(tiny_model.name)
    with child(tiny_model, "maps") as pid:
        result = run_cli("convert", link, "--in-place", "--factor", "2")
        assert result.returncode == 1
        assert f"pid {pid} (holder) maps it" in error_line(result)


@pytest.mark.slow
def test_recover_refuses_a_file_in_use(run_cli, tiny_model: Path) -> None:
    crashed = run_cli("convert", tiny_model, "--in-place", "--factor", "2", env={CRASH_ENV: "after-shift"})
    assert crashed.returncode == CRASH_EXIT and undo_path(tiny_model).exists()
    interrupted = sha256(tiny_model)
    with child(tiny_model, "maps") as pid:
        change = "finishing or undoing its interrupted in-place change"
        for args in (["--recover"], ["--factor", "2"]):  # a convert to a new file recovers first
            result = run_cli("convert", tiny_model, *args)
            assert result.returncode == 1
            assert error_line(result) == refusal(
                tiny_model, pid, "maps it", change, "stop it first, or use --force to go ahead anyway"
            )
            assert sha256(tiny_model) == interrupted and undo_path(tiny_model).exists()
        forced = run_cli("convert", tiny_model, "--recover", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "completed" in forced.stderr and not undo_path(tiny_model).exists()


# --- a real server ----------------------------------------------------------------------------

PROMPT = "Complete the sentence: The capital of France is"


def complete(server: LlamaServer) -> str:
    response = httpx.post(
        f"{server.url}/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0}, timeout=120
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["text"])


@pytest.mark.slow
def test_a_served_model_is_not_changed_under_its_server(run_cli, tiny_model: Path, tmp_path: Path) -> None:
    model = shutil.copyfile(tiny_model, tmp_path / "served.gguf")
    before = sha256(model)
    server = LlamaServer(model, n_ctx=256)
    try:
        answer = complete(server)
        assert answer == complete(server)  # greedy: the same answer every time
        refused = run_cli("convert", model, "--in-place", "--factor", "2")
        assert refused.returncode == 1
        line = error_line(refused)
        assert line.startswith(f"Error: {model} is in use: pid {server.process.pid} (")
        assert ") maps it; changing it in place would move the data under it" in line
        assert sha256(model) == before
        assert complete(server) == answer

        forced = run_cli("convert", model, "--in-place", "--factor", "2", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "written in place (insert-range" in forced.stderr
        # what the refusal is for: the weights moved under the server, which answers otherwise, without an error
        assert complete(server) != answer
    finally:
        server.stop()
