"""The CPU a benchmark ran on, from /proc/cpuinfo, for every result file (pure Python, no TVM, so
the GPU machine's scripts can use it too)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    return (cpuinfo_field("flags") or "").split()
