"""How a check's answer is written: one first line, perfdata, long output (docs/design.md §2).

- one first line ``NAME STATUS - summary | perfdata``, long output after it, the whole
  under Consul's 4096-byte window (it keeps the tail, so the head must fit);
- no traceback unless ``-vvv``.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field

from checks.status import Status

# Consul keeps the last 4096 bytes of a check's output; stay clear of that.
OUTPUT_LIMIT = 4000
SUMMARY_LIMIT = 200


def perfdata_label(name: str, taken: set[str], *, fallback: str) -> str:
    """A stable ASCII snake_case label for a named object (a standby, a slot).

    Graphers break on spaces, quotes and non-ASCII in labels. A name that had to be
    changed gets a short hash of the exact name, so 'DC1 standby' and 'dc1-standby' keep
    their own series whoever else is connected (numbering them by arrival would swap the
    graphs when one disconnects). ``taken`` only guards against the hash colliding.
    """
    label = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or fallback
    if label != name:
        # here, not at the top: hashlib loads OpenSSL (~3 ms) and most checks never get here
        import hashlib

        label = f"{label}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    unique, number = label, 2
    while unique in taken:
        unique, number = f"{label}_{number}", number + 1
    taken.add(unique)
    return unique


@dataclass
class Report:
    """What a check run ends with; rendered once, at the very end."""

    name: str
    status: Status
    summary: str
    perfdata: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def render(self) -> str:
        # One line, and no ';': Nagios rewrites it in the first line of output (nagioscore#652),
        # and summaries carry messages from libpq and Consul that use it. No '|' in any
        # line but as the perfdata separator: Nagios reads what follows one as perfdata,
        # and application_names, database names and server messages may contain it.
        summary = " ".join(self.summary.split()).replace(";", ",").replace("|", "/")
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1] + "…"
        first = f"{self.name} {self.status.name} - {summary}"
        perfdata = list(self.perfdata)
        # Perfdata stays on the first line (Icinga mislabels it elsewhere); when it would
        # crowd out the rest, the tail of it goes and a detail line says so.
        details = [line.replace("|", "/") for line in self.details]
        if len(first) + len(" | " + " ".join(perfdata)) > OUTPUT_LIMIT // 2:
            while perfdata and len(first) + len(" | " + " ".join(perfdata)) > OUTPUT_LIMIT // 2:
                perfdata.pop()
            details.insert(0, "(perfdata truncated to fit the 4 KB output limit)")
        if perfdata:
            first += " | " + " ".join(perfdata)
        lines = [first]
        used = len(first.encode()) + 1
        for index, line in enumerate(details):
            size = len(line.encode()) + 1
            more = len(details) - index
            if used + size > OUTPUT_LIMIT - 20 and more > 0:
                lines.append(f"… {more} more")
                break
            lines.append(line)
            used += size
        return "\n".join(lines) + "\n"


def internal_error(name: str, exc: BaseException, *, verbose: int = 0) -> Report:
    details = traceback.format_exception(exc) if verbose >= 3 else []
    lines = [line for chunk in details for line in chunk.rstrip("\n").split("\n")]
    message = f"internal error: {type(exc).__name__}: {exc}".rstrip(": ")
    return Report(name, Status.UNKNOWN, message, details=lines)
