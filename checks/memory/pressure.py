"""Memory pressure (PSI): the share of time tasks stalled waiting for memory.

Unlike "used", it says whether the lack of memory hurts: a host can be 95% used with its
page cache and stall nothing, or 80% used and thrash. Linux 4.20+, CONFIG_PSI, not psi=0.
"""

from __future__ import annotations

from typing import NamedTuple

from checks.memory.files import read_text, under


class Pressure(NamedTuple):
    """Percent of wall time, averaged over 10 s and 60 s."""

    source: str
    some_avg10: float
    some_avg60: float
    full_avg10: float | None
    full_avg60: float | None


def parse_pressure(text: str, source: str) -> Pressure | None:
    lines: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        lines[kind] = values
    some = lines.get("some")
    if not some or "avg10" not in some or "avg60" not in some:
        return None
    full = lines.get("full", {})
    return Pressure(source, some["avg10"], some["avg60"], full.get("avg10"), full.get("avg60"))


def read_pressure(root: str, path: str = "/proc/pressure/memory") -> Pressure | None:
    """None when the kernel has no PSI (no file, or EOPNOTSUPP when booted with psi=0)."""
    text = read_text(under(root, path))
    return None if text is None else parse_pressure(text, path)
