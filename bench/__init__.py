"""Benchmarks (figures and the commands that produced them in bench/RESULTS.md)."""

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (each benchmark prints it beside its figures)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
