"""What machine a benchmark ran on (written next to every result)."""

from __future__ import annotations

import os
import platform
import sys


def machine() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gib": mem_gib, "python": sys.version.split()[0],
            "platform": platform.platform()}


def pin_to_one_core() -> int | None:
    """Run on one core, as the CPU targets say: unpinned, the OS migrates the process between
    the two cores here and a run costs 40-50 % more (cold caches), at random."""
    try:
        core = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):
        return None
