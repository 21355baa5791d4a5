"""Host memory from /proc/meminfo and the paging counters from /proc/vmstat."""

from __future__ import annotations

import os
from typing import NamedTuple

from checks.memory.files import read_keyed, read_text, under
from checks.status import unknown


class HostMemory(NamedTuple):
    """The host's memory in bytes, as the kernel accounts it."""

    mem_total: int
    mem_available: int
    hugetlb_pool: int
    hugepages_total: int
    hugepages_free: int
    hugepages_reserved: int
    hugepage_size: int
    swap_total: int
    swap_free: int
    committed: int
    commit_limit: int

    @property
    def total(self) -> int:
        """What ordinary allocations can use: the HugeTLB pool is carved out at boot (or by
        vm.nr_hugepages) and never counts toward MemAvailable, so a PostgreSQL host with
        huge_pages=on would otherwise look that much fuller than it is."""
        return max(self.mem_total - self.hugetlb_pool, 0)

    @property
    def available(self) -> int:
        return min(self.mem_available, self.total)

    @property
    def used(self) -> int:
        return self.total - self.available

    @property
    def swap_used(self) -> int:
        return max(self.swap_total - self.swap_free, 0)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes (``kB`` lines) or counts (the HugePages_* lines)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        values[key.strip()] = int(parts[0]) * scale
    return values


def read_host_memory(root: str) -> HostMemory:
    path = under(root, "/proc/meminfo")
    text = read_text(path)
    if text is None:
        raise unknown(f"cannot read {path}: not found")
    info = parse_meminfo(text)
    if "MemTotal" not in info:
        raise unknown(f"{path} has no MemTotal line")
    if "MemAvailable" not in info:
        # MemAvailable exists since Linux 3.14; guessing it from MemFree + Cached is what
        # makes other plugins count shared_buffers as free
        raise unknown(f"{path} has no MemAvailable (Linux older than 3.14 is not supported)")
    page_size = info.get("Hugepagesize", 0)
    hugepages_total = info.get("HugePages_Total", 0)
    # "Hugetlb" (Linux 4.16+) covers every huge page size; older kernels only report the
    # default size's pool
    pool = info.get("Hugetlb", hugepages_total * page_size)
    return HostMemory(
        mem_total=info["MemTotal"],
        mem_available=info["MemAvailable"],
        hugetlb_pool=pool,
        hugepages_total=hugepages_total,
        hugepages_free=info.get("HugePages_Free", 0),
        hugepages_reserved=info.get("HugePages_Rsvd", 0),
        hugepage_size=page_size,
        swap_total=info.get("SwapTotal", 0),
        swap_free=info.get("SwapFree", 0),
        committed=info.get("Committed_AS", 0),
        commit_limit=info.get("CommitLimit", 0),
    )


class Paging(NamedTuple):
    """Counters since boot from /proc/vmstat (None where the kernel lacks them)."""

    swap_in_bytes: int
    swap_out_bytes: int
    oom_kills: int | None


def read_paging(root: str) -> Paging:
    values = read_keyed(under(root, "/proc/vmstat")) or {}
    # pswpin/pswpout count pages; the perfdata contract wants bytes
    page = os.sysconf("SC_PAGE_SIZE")
    return Paging(
        swap_in_bytes=values.get("pswpin", 0) * page,
        swap_out_bytes=values.get("pswpout", 0) * page,
        oom_kills=values.get("oom_kill"),  # Linux 4.13+
    )
