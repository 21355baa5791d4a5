"""The mem_check resource: turns a :class:`Snapshot` into metrics and long-output lines.

It knows nothing of thresholds (those are contexts, in checks/mem_check.py). Every metric
is always emitted, so graphs keep their series; a dimension the kernel lacks (PSI, OOM
counter) is left out unless a threshold was set on it, in which case it comes out as None
and its context says UNKNOWN rather than a silent OK.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

import nagiosplugin

from checks.adapters import Resource
from checks.units import format_bytes

if TYPE_CHECKING:  # type-only: processes is imported for --top alone
    from checks.memory.processes import ProcessMemory
    from checks.memory.snapshot import Snapshot


def _percent(part: int, whole: int) -> float:
    # one decimal: the text must not change between runs over noise (docs/design.md §2)
    return round(100.0 * part / whole, 1) if whole else 0.0


class MemoryResource(Resource):
    """Metrics in perfdata order: the headline first, so the 4 KB cap would drop the
    least useful."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        top: list[ProcessMemory] | None = None,
        required: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.top = top or []
        self.required = set(required)

    @property
    def headline(self) -> str:
        return self.headline_without(())

    def headline_without(self, said: Collection[str]) -> str:
        """The headline without what the named metrics' results already say: a problem
        line reads 'used 78.1% (above 75.0%), 4.2 GiB available of ...', not 78.1% twice."""
        s = self.snapshot
        parts = []
        if not {"used_percent", "used_bytes"} & set(said):
            parts.append(f"{_percent(s.used, s.total):.1f}% used")
        if "available_bytes" not in said:
            parts.append(f"{format_bytes(s.available)} available")
        return f"{', '.join(parts)} of {format_bytes(s.total)} ({s.label})"

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        s, host = self.snapshot, self.snapshot.host
        Metric = nagiosplugin.Metric
        yield Metric("used_percent", _percent(s.used, s.total), "%", 0, 100)
        yield Metric("used_bytes", s.used, "B", 0, s.total)
        yield Metric("available_bytes", s.available, "B", 0, s.total)
        yield Metric("total_bytes", s.total, "B", 0)
        yield Metric("swap_used_percent", _percent(host.swap_used, host.swap_total), "%", 0, 100)
        yield Metric("swap_used_bytes", host.swap_used, "B", 0, host.swap_total)
        yield Metric("swap_total_bytes", host.swap_total, "B", 0)
        yield Metric("swap_in_bytes", s.paging.swap_in_bytes, "c", 0)
        yield Metric("swap_out_bytes", s.paging.swap_out_bytes, "c", 0)
        pressure = s.pressure
        if pressure is not None:
            yield Metric("pressure_some_avg10", pressure.some_avg10, "%", 0, 100)
            yield Metric("pressure_some_avg60", pressure.some_avg60, "%", 0, 100)
        elif "pressure_some_avg60" in self.required:
            yield Metric("pressure_some_avg60", None, "%")
        commit_percent = _percent(host.committed, host.commit_limit)
        yield Metric("commit_percent", commit_percent, "%", 0)
        yield Metric("committed_bytes", host.committed, "B", 0)
        yield Metric("commit_limit_bytes", host.commit_limit, "B", 0)
        if s.oom_kills is not None or "oom_kills" in self.required:
            yield Metric("oom_kills", s.oom_kills, "c", 0)
        yield Metric("hugetlb_bytes", host.hugetlb_pool, "B", 0)
        self.details = self._details()

    def _details(self) -> list[str]:
        s, host = self.snapshot, self.snapshot.host
        lines = [f"memory: {self.headline}"]
        if host.hugetlb_pool:
            lines.append(
                f"hugetlb: pool {format_bytes(host.hugetlb_pool)} excluded from the total"
                f" ({host.hugepages_total} x {format_bytes(host.hugepage_size)},"
                f" {host.hugepages_free} free, {host.hugepages_reserved} reserved)"
            )
        lines.append(self._cgroup_line())
        if host.swap_total:
            lines.append(
                f"swap: {format_bytes(host.swap_used)} used of {format_bytes(host.swap_total)};"
                f" since boot {format_bytes(s.paging.swap_in_bytes)} in,"
                f" {format_bytes(s.paging.swap_out_bytes)} out"
            )
        else:
            lines.append("swap: none configured")
        if s.pressure is not None:
            p = s.pressure
            full = f", full avg10 {p.full_avg10:.2f}%" if p.full_avg10 is not None else ""
            lines.append(
                f"pressure: some avg10 {p.some_avg10:.2f}% avg60 {p.some_avg60:.2f}%{full}"
                f" ({p.source})"
            )
        else:
            lines.append("pressure: not available (kernel without PSI, or booted with psi=0)")
        share = _percent(host.committed, host.commit_limit)
        commit = (
            f"commit charge {format_bytes(host.committed)} of CommitLimit"
            f" {format_bytes(host.commit_limit)} ({share:.1f}%)"
        )
        if s.overcommit.enforced:
            lines.append(f"overcommit: {s.overcommit.description}: {commit}, enforced")
        else:
            lines.append(
                f"overcommit: {s.overcommit.description}: {commit}, not enforced so not thresholded"
            )
        if s.oom_kills is None:
            lines.append("oom kills: not counted by this kernel (Linux 4.13+)")
        else:
            counted_by_cgroup = s.scope == "cgroup" and s.cgroup and s.cgroup.oom_kills is not None
            where = "in the cgroup" if counted_by_cgroup else "since boot"
            lines.append(f"oom kills: {s.oom_kills} {where}")
        for rank, proc in enumerate(self.top, 1):
            lines.append(
                f"top {rank}: {format_bytes(proc.bytes)} {proc.kind} pid {proc.pid} {proc.name}"
            )
        return lines

    def _cgroup_line(self) -> str:
        s, cgroup = self.snapshot, self.snapshot.cgroup
        if cgroup is None:
            return f"cgroup: not used ({s.note})" if s.note else "cgroup: not used (--scope host)"
        limit = (
            f"limit {format_bytes(cgroup.limit.bytes)} set on {cgroup.limit.source}"
            if cgroup.limit
            else "no limit"
        )
        line = (
            f"cgroup: v{cgroup.version} {cgroup.path}, {limit}, usage"
            f" {format_bytes(cgroup.usage)}, working set {format_bytes(cgroup.working_set)}"
            f" (inactive file {format_bytes(cgroup.inactive_file)} excluded)"
        )
        if s.scope == "host" and s.note:
            line += f"; using the host: {s.note}"
        return line
