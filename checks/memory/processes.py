"""The largest processes, for ``--top``: the one place mem_check uses psutil.

PSS (proportional set size) splits shared pages among the processes that map them, so
PostgreSQL's shared_buffers count once across all backends instead of once per backend as
in RSS. It needs /proc/PID/smaps_rollup, readable by root or the process owner; RSS is the
fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import psutil

# PostgreSQL rewrites its process title ("postgres: 15/main: checkpointer"); it names the
# role of the backend and carries no secret, unlike arbitrary command lines, which the
# check must not copy into output replicated to every Consul server.
_TITLED = ("postgres", "postmaster")


class ProcessMemory(NamedTuple):
    pid: int
    name: str
    bytes: int
    kind: str  # "pss" or "rss"


def _describe(proc: psutil.Process, name: str) -> str:
    if name in _TITLED:
        try:
            cmdline = proc.cmdline()
        except Exception:
            return name
        if len(cmdline) == 1 and cmdline[0].startswith("postgres: "):
            return cmdline[0][:60]
    return name


def top_processes(
    count: int, procfs: str = "/proc", only: set[int] | None = None
) -> list[ProcessMemory]:
    """The ``count`` largest processes, of those in ``only`` when given (a cgroup's)."""
    import heapq

    import psutil  # only --top pays for this import (docs/design.md §4)

    psutil.PROCFS_PATH = procfs
    by_rss: list[tuple[int, psutil.Process]] = []
    for proc in psutil.process_iter(["memory_info"]):
        info = proc.info.get("memory_info")
        if only is not None and proc.pid not in only:
            continue
        if info is not None and info.rss > 0:  # kernel threads have no memory of their own
            by_rss.append((info.rss, proc))
    by_rss.sort(key=lambda item: item[0], reverse=True)

    # PSS <= RSS, so once the N-th largest PSS so far is at least the next RSS, nothing
    # further down can enter the list: only the head of the RSS order pays for smaps.
    best: list[tuple[int, int, ProcessMemory]] = []
    for rss, proc in by_rss:
        if len(best) >= count and best[0][0] >= rss:
            break
        try:
            size, kind = proc.memory_full_info().pss, "pss"
        except (psutil.AccessDenied, AttributeError):
            size, kind = rss, "rss"
        except psutil.Error:  # gone while we looked
            continue
        try:
            name = proc.name()
        except psutil.Error:
            continue
        entry = ProcessMemory(proc.pid, _describe(proc, name), size, kind)
        item = (size, -proc.pid, entry)
        if len(best) < count:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
    return [entry for _, _, entry in sorted(best, reverse=True)]
