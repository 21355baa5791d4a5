"""The overcommit policy, which decides whether CommitLimit means anything.

Under vm.overcommit_memory=2 (what PostgreSQL's documentation recommends, so that the OOM
killer never picks the postmaster) an allocation that would push Committed_AS past
CommitLimit fails: a backend reports "out of memory" long before RAM is full. Under 0 and
1 the limit is not enforced, so thresholding it would alarm on nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from checks.memory.files import read_text, under

MODE_NAMES = {0: "heuristic", 1: "always", 2: "strict"}


class Overcommit(NamedTuple):
    mode: int | None
    ratio: int | None
    kbytes: int | None

    @property
    def enforced(self) -> bool:
        return self.mode == 2

    @property
    def description(self) -> str:
        if self.mode is None:
            return "mode unknown (no /proc/sys/vm/overcommit_memory)"
        name = MODE_NAMES.get(self.mode, "unknown")
        text = f"vm.overcommit_memory={self.mode} ({name})"
        if self.enforced:
            if self.kbytes:
                text += f", overcommit_kbytes={self.kbytes}"
            elif self.ratio is not None:
                text += f", overcommit_ratio={self.ratio}"
        return text


def _number(root: str, path: str) -> int | None:
    text = read_text(under(root, path))
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def read_overcommit(root: str) -> Overcommit:
    return Overcommit(
        mode=_number(root, "/proc/sys/vm/overcommit_memory"),
        ratio=_number(root, "/proc/sys/vm/overcommit_ratio"),
        kbytes=_number(root, "/proc/sys/vm/overcommit_kbytes"),
    )
