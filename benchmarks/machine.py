"""The machine facts every benchmark prints with its figures."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
