"""One reading of everything mem_check reports, and the choice of scope.

``--scope host`` measures the host; ``cgroup`` the chosen cgroup (``--cgroup``, else the
root of the cgroup file system, which is the container's own cgroup inside a container);
``auto`` takes that cgroup when a limit below the host's memory applies to it, else the
host. The scope is never taken from /proc/self/cgroup (docs/design.md §4).
"""

from __future__ import annotations

from typing import NamedTuple

from checks.memory.cgroup import CgroupMemory, find_hierarchy, read_cgroup
from checks.memory.meminfo import HostMemory, Paging, read_host_memory, read_paging
from checks.memory.overcommit import Overcommit, read_overcommit
from checks.memory.pressure import Pressure, read_pressure
from checks.status import CheckFailed, unknown

SCOPES = ("auto", "host", "cgroup")


class Snapshot(NamedTuple):
    scope: str  # "host" or "cgroup", after auto has chosen
    host: HostMemory
    cgroup: CgroupMemory | None
    paging: Paging
    pressure: Pressure | None
    overcommit: Overcommit
    note: str | None = None  # why auto chose what it chose

    @property
    def total(self) -> int:
        if self.scope == "cgroup" and self.cgroup and self.cgroup.limit:
            return min(self.cgroup.limit.bytes, self.host.total)
        return self.host.total

    @property
    def used(self) -> int:
        if self.scope == "cgroup" and self.cgroup:
            return min(self.cgroup.working_set, self.total)
        return self.host.used

    @property
    def available(self) -> int:
        return self.total - self.used

    @property
    def oom_kills(self) -> int | None:
        if self.scope == "cgroup" and self.cgroup and self.cgroup.oom_kills is not None:
            return self.cgroup.oom_kills
        return self.paging.oom_kills

    @property
    def label(self) -> str:
        if self.scope == "host" or not self.cgroup:
            return "host"
        if not _limited(self.cgroup, self.host):
            # the total is then the host's: say so, or "of 23.5 GiB" reads as a limit
            return f"cgroup {self.cgroup.path}, no limit"
        return f"cgroup {self.cgroup.path}"


def _limited(cgroup: CgroupMemory, host: HostMemory) -> bool:
    # a limit at or above the host's memory never bites before the host runs out
    return cgroup.limit is not None and cgroup.limit.bytes < host.total


def take_snapshot(root: str, scope: str, cgroup_path: str | None) -> Snapshot:
    host = read_host_memory(root)
    cgroup: CgroupMemory | None = None
    note: str | None = None
    chosen = "host"
    if scope in ("auto", "cgroup"):
        hierarchy = find_hierarchy(root)
        if hierarchy is None:
            if scope == "cgroup" or cgroup_path is not None:
                raise unknown("no cgroup memory controller is mounted (see /proc/self/mountinfo)")
            note = "no cgroup memory controller mounted"
        else:
            try:
                cgroup = read_cgroup(root, hierarchy, cgroup_path)
            except CheckFailed:
                if scope == "cgroup" or cgroup_path is not None:
                    raise
                # the v2 root cgroup has no memory.current: we are on the host itself
                note = "the cgroup root is the host's"
        if scope == "cgroup":
            chosen = "cgroup"
        elif cgroup is not None:
            chosen = "cgroup" if _limited(cgroup, host) else "host"
            if chosen == "host":
                note = f"no memory limit below the host's on cgroup {cgroup.path}"
    pressure = None
    if chosen == "cgroup" and cgroup and cgroup.pressure_path:
        pressure = read_pressure(root, cgroup.pressure_path)
    if pressure is None:
        pressure = read_pressure(root)
    return Snapshot(
        scope=chosen,
        host=host,
        cgroup=cgroup,
        paging=read_paging(root),
        pressure=pressure,
        overcommit=read_overcommit(root),
        note=note,
    )
