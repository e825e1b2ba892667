"""Default thread counts: physical cores for generation, every usable CPU for prompt batches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yarn_cli.llama.loader import LoadOptions, load_model
from yarn_cli.llama.threads import default_threads, linux_cores, physical_cores, usable_cpus
from yarn_cli.model import open_model

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux sysfs")


def fake_sysfs(root: Path, topology: dict[int, tuple[int, int]]) -> Path:
    """cpuN/topology/{physical_package_id,core_id} for each cpu: (package, core)."""
    for cpu, (package, core) in topology.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_smt_siblings_count_once(tmp_path: Path) -> None:
    # 2 packages x 2 cores x 2 threads; core ids repeat across packages.
    layout = {cpu: (cpu // 4, (cpu // 2) % 2) for cpu in range(8)}
    sysfs = fake_sysfs(tmp_path, layout)
    assert linux_cores(sysfs, range(8)) == 4
    assert linux_cores(sysfs, [0, 1]) == 1  # two threads of one core
    assert linux_cores(sysfs, [0, 2, 4, 6]) == 4


def test_no_smt_counts_every_cpu(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {cpu: (0, cpu) for cpu in range(6)})
    assert linux_cores(sysfs, range(6)) == 6


def test_missing_topology_says_unknown(tmp_path: Path) -> None:
    assert linux_cores(tmp_path, [0, 1]) is None


@linux_only
@pytest.mark.skipif(shutil.which("lscpu") is None, reason="needs lscpu (util-linux) to cross-check")
def test_physical_cores_agree_with_lscpu() -> None:
    rows = subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET"], capture_output=True, text=True, check=True).stdout
    usable = os.sched_getaffinity(0)
    cores = {tuple(row.split(",")[1:]) for row in rows.splitlines() if not row.startswith("#")
             and int(row.split(",")[0]) in usable}  # fmt: skip
    assert physical_cores() == len(cores)


def test_defaults_fit_the_usable_cpus() -> None:
    generation, batch = default_threads()
    assert batch == usable_cpus()
    assert 1 <= generation <= batch


def test_llama_cpp_gets_the_defaults_and_t_overrides_them(tiny_model: Path) -> None:
    generation, batch = default_threads()
    llm, _ = load_model(open_model(tiny_model), LoadOptions(n_ctx=256))
    try:
        assert (llm.context_params.n_threads, llm.context_params.n_threads_batch) == (generation, batch)
    finally:
        llm.close()
    llm, _ = load_model(open_model(tiny_model), LoadOptions(n_ctx=256, n_threads=1))
    try:
        assert (llm.context_params.n_threads, llm.context_params.n_threads_batch) == (1, 1)
    finally:
        llm.close()
