"""How many CPU threads llama.cpp should use when the user does not say.

llama-cpp-python's own default is half the logical CPUs, which assumes two hardware
threads per core: on machines without SMT (most VMs, Apple silicon) it leaves half the
cores idle while generating. llama.cpp's own tools default to the physical cores, and so
does this, counted among the CPUs this process may run on (containers and ``taskset``
restrict them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")


def usable_cpus() -> int:
    """Logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def physical_cores(sysfs: Path = SYSFS_CPU) -> int | None:
    """Physical cores among the usable CPUs, or None when the platform does not say."""
    if sys.platform.startswith("linux"):
        return linux_cores(sysfs, os.sched_getaffinity(0))
    if sys.platform == "darwin":
        return _darwin_performance_cores()
    return None


def linux_cores(sysfs: Path, cpus: Iterable[int]) -> int | None:
    """Distinct (package, core) pairs of ``cpus`` in sysfs: SMT siblings share one."""
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


def _darwin_performance_cores() -> int | None:
    """Apple silicon: the performance cores, as llama.cpp counts them (efficiency cores slow it down)."""
    for name in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True)
            return int(out.stdout.strip())
        except (OSError, subprocess.SubprocessError, ValueError):
            continue
    return None


def default_threads() -> tuple[int, int]:
    """Threads for generation and for prompt batches: physical cores, and every usable CPU."""
    batch = usable_cpus()
    generation = physical_cores() or max(batch // 2, 1)
    return min(generation, batch), batch
