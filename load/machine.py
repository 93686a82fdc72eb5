"""What machine a benchmark ran on (written next to every result)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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


def save_result(name: str, report: dict, summary: tuple[str, ...] = ()) -> Path:
    """Write ``report`` to ``load/results/<name>.json`` and print its ``summary`` keys."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in summary} if summary else report, indent=None if summary else 2))
    return path
